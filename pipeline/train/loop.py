"""The training loop of one process: TBPTT windows under a DeepSpeed engine.

A step feeds k consecutive segments of every row of each micro-batch, takes one
backward through all k (the only form ZeRO-3 accepts), lets the engine step, then
detaches the memory and carries it into the next step. Checkpoints hold everything
a bit-exact continuation needs; rank 0 alone talks to the tracker, through a queue.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import math
import os
import signal
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import psutil
import torch
import torch.distributed as dist
from tqdm import tqdm

from data_prep.atomic import write_atomic
from model import RMAT
from pipeline.config import flatten, to_dict, to_yaml
from pipeline.tbptt import CarriedMemory, window_loss
from pipeline.train import checkpoint
from pipeline.train.config import TrainConfig
from pipeline.train.engine import build_engine, init_distributed, measure_peak_tflops, set_threads, state_dtype
from pipeline.train.evaluate import evaluate
from pipeline.train.files import EVAL_LOG, FINAL_METRICS, LOSS_LOG, TIMINGS
from pipeline.train.loader import TrainLoader, open_split, read_documents
from pipeline.train.tracking import (
    KIND_TAG,
    RunSpec,
    TrackedRun,
    Tracker,
    folder_dataset,
    forget_unfinished_attempt,
    git_commit,
    tracking_uri,
)


class StopRequest:
    """SIGTERM/SIGUSR2 (SLURM's warning before the end): checkpoint at the next step and exit.

    The handler this one replaces hears the signal too: whoever runs the training (a job
    wrapper) tells a cancel (SIGTERM) from a time limit (SIGUSR2) by it.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGUSR2)}

    def _handle(self, signum, frame) -> None:
        self.requested = True
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)


@dataclass
class StepResult:
    loss: float
    tokens: int
    stop: bool


class Trainer:
    """Everything one process holds while training."""

    def __init__(self, cfg: TrainConfig, local_procs: int) -> None:
        self.cfg = cfg
        self.stop = StopRequest()  # before the slow start-up, so that an early SIGTERM is not fatal
        self.threads = set_threads(cfg.engine.threads_per_proc, local_procs)
        init_distributed()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        model = RMAT(cfg.model)
        # Before the engine partitions the weights, and only on a fresh start: a resume loads its own.
        if cfg.init_from and not (cfg.resume and checkpoint.latest_meta(cfg.run_dir)):
            model.load_state_dict(checkpoint.load_model(cfg.init_from).state_dict())
        self.flops_per_token = model.flops_per_token()
        self.n_params = model.num_params()
        self.engine, _, self.scheduler = build_engine(cfg, model, self.world)
        self.device, self.dtype = self.engine.device, state_dtype(cfg)
        self.train_info = open_split(cfg.data.shards, cfg.data.train_split)
        self.val_info = open_split(cfg.data.shards, cfg.data.val_split)
        groups = cfg.engine.grad_accum
        self.loader = TrainLoader(self.train_info, self.rank, self.world, cfg.data.batch_size, groups,
                                  cfg.model.segment_len, cfg.seed, cfg.data.whole_short_documents,
                                  cfg.data.align_document_ends, cfg.data.shard_order)
        rows = cfg.data.batch_size // (self.world * groups)
        self.memory = CarriedMemory(cfg.model, groups, rows, self.device, self.dtype)
        self.val_docs = read_documents(self.val_info, cfg.eval.max_docs)
        self.peak_tflops = cfg.engine.peak_tflops or measure_peak_tflops(self.device)
        self.step, self.tracked = 0, TrackedRun(cfg.run_dir)
        # Loss tokens seen so far, the axis that compares runs of other batch or segment sizes fairly.
        # None after resuming a checkpoint written before it was counted: unknown, so not logged.
        self.tokens: Optional[int] = 0
        self._restore()
        self.tracker = self._start_tracker() if self.rank == 0 else None
        self.peak_rss = 0
        # From the process's start (interpreter, imports, process group, engine, resume): a job's time
        # limit must leave room for this on every attempt, so the user is told what it was.
        self.timings = {"startup_s": round(time.time() - psutil.Process().create_time(), 1)}
        self._say(f"start-up took {self.timings['startup_s']:.1f} s ({self.threads} thread(s) per process, "
                  f"{self.world} process(es), device {self.device}, from step {self.step})")

    # ---- resume ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Optional[int]]:
        return {"step": self.step, "tokens": self.tokens}

    def load_state_dict(self, state: dict[str, Optional[int]]) -> None:
        self.step, self.tokens = int(state["step"]), state.get("tokens")

    def checkpointed(self) -> dict[str, checkpoint.Stateful]:
        """Everything a bit-exact continuation needs besides DeepSpeed's own state; the RNGs last."""
        return {"trainer": self, "loader": self.loader, "memory": self.memory, "tracker": self.tracked,
                "rng": checkpoint.RNGStates()}

    def _restore(self) -> None:
        resumed = self.cfg.resume and checkpoint.load(self.engine, self.cfg.run_dir, self.rank, self.world,
                                                      self.checkpointed())
        self.abandoned_run_id = None
        if not resumed and self.rank == 0:
            self.abandoned_run_id = forget_unfinished_attempt(self.cfg.run_dir)

    def save_checkpoint(self) -> None:
        """Save a checkpoint of this step on every rank (collective); rank 0 says how long it took."""
        start = time.perf_counter()
        if self.tracker is not None:
            self.tracker.persist()  # the points of every step this checkpoint covers survive a kill
        checkpoint.save(self.engine, self.cfg, self.step, self.rank, self.world, self.checkpointed())
        self.timings.update(checkpoint_s=round(time.perf_counter() - start, 2), checkpoint_step=self.step)
        self._say(f"checkpoint at step {self.step} took {self.timings['checkpoint_s']:.2f} s")
        if self.rank == 0:
            write_atomic(os.path.join(self.cfg.run_dir, TIMINGS), json.dumps(self.timings, indent=1).encode())

    def _say(self, message: str) -> None:
        if self.rank == 0:
            print(f"rmat train: {message}", flush=True)

    # ---- tracking --------------------------------------------------------------------

    def _start_tracker(self) -> Tracker:
        import deepspeed

        cfg = self.cfg
        tags = {"git_commit": git_commit(), "data_manifest_sha256": self.train_info.manifest_hash,
                "tokenizer_hash": self.train_info.tokenizer_hash, "world_size": str(self.world),
                "deepspeed_version": deepspeed.__version__, "torch_version": torch.__version__,
                "zero_stage": str(cfg.engine.zero_stage), "n_params": str(self.n_params), KIND_TAG: "train"}
        run_name = cfg.tracking.run_name or os.path.basename(os.path.abspath(cfg.run_dir))
        return Tracker(RunSpec(
            uri=tracking_uri(cfg.tracking.tracking_uri, cfg.run_dir), experiment=cfg.tracking.experiment,
            run_dir=cfg.run_dir, run_id=self.tracked.run_id, run_name=run_name,
            params=flatten(to_dict(cfg)), tags=tags, flush_seconds=cfg.tracking.flush_seconds,
            request_timeout_s=cfg.tracking.request_timeout_s, abandoned_run_id=self.abandoned_run_id,
            parent_run_id=cfg.tracking.parent_run_id or None,
            dataset=folder_dataset(cfg.data.shards, self.train_info.manifest_hash)))

    def _step_metrics(self, result: StepResult, seconds: float) -> dict[str, float]:
        self.peak_rss = max(self.peak_rss, psutil.Process().memory_info().rss)
        tokens_s = result.tokens / seconds
        metrics = {"train/loss": result.loss, "train/ppl": math.exp(min(result.loss, 50.0)),
                   "train/lr": self.scheduler.get_last_lr()[0], "perf/tokens_per_s": tokens_s,
                   "perf/step_time_s": seconds, "perf/peak_rss_mb": self.peak_rss / 2**20,
                   "perf/mfu": tokens_s * self.flops_per_token / (self.peak_tflops * 1e12 * self.world)}
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            metrics["train/grad_norm"] = float(grad_norm)
        return metrics | self._tokens_metric()

    def _tokens_metric(self) -> dict[str, float]:
        return {} if self.tokens is None else {"train/tokens": float(self.tokens)}

    # ---- the loop --------------------------------------------------------------------

    def train_step(self) -> StepResult:
        """One optimizer step: every micro-batch's TBPTT window, then the engine's step."""
        loss_sum, tokens = 0.0, 0
        memory = self.memory.states
        for g in range(len(memory)):
            segments = [_to(s, self.device) for s in self.loader.window(g, self.cfg.data.tbptt_segments)]
            loss, state, n = window_loss(self.engine, segments, memory[g], self.cfg.engine.activation_checkpointing)
            self.engine.backward(loss)
            self.engine.step()
            memory[g] = state.detach()
            loss_sum, tokens = loss_sum + loss.item() * n, tokens + n
        # One collective for the global loss and for whether any rank was asked to stop.
        totals = torch.tensor([loss_sum, tokens, float(self.stop.requested)], dtype=torch.float64, device=self.device)
        dist.all_reduce(totals)  # on the engine's device: NCCL reduces only GPU tensors
        return StepResult(loss=float(totals[0] / max(totals[1], 1)), tokens=int(totals[1]), stop=totals[2] > 0)

    def run(self) -> Optional[dict[str, float]]:
        """Train to ``cfg.steps`` (or a stop request); returns rank 0's final metrics."""
        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=self.rank != 0)
        log_path = os.path.join(cfg.run_dir, LOSS_LOG)
        saved_at, last = self.step, {}
        if self.step == 0 and cfg.eval.every:
            self._evaluate()  # the untrained baseline that later evaluations improve on
        # torch, DeepSpeed and the model leave ~3*10^5 long-lived objects; a full garbage collection
        # walks them all (0.2-0.3 s, holding the GIL) whenever any thread allocates enough.
        gc.freeze()
        # A step's time runs from the end of one train_step to the end of the next, so that it holds
        # everything the loop does per step (logging, tracker, progress bar) but no checkpoint or eval.
        last_end = time.perf_counter()
        while self.step < cfg.steps:
            if cfg.token_warmup_steps:
                self.engine.module.write_every_token(self.step < cfg.token_warmup_steps)
            result = self.train_step()
            seconds, last_end = time.perf_counter() - last_end, time.perf_counter()
            self.step += 1
            if self.tokens is not None:
                self.tokens += result.tokens
            if self.rank == 0:
                _append_line(log_path, {"step": self.step, "loss": result.loss, "loss_hex": result.loss.hex(),
                                        "step_time_s": seconds})
                last = self._step_metrics(result, seconds)
                if self.step % cfg.tracking.log_every == 0:
                    self.tracker.log(self.step, last)
                bar.set_postfix(loss=f"{result.loss:.3f}", tok_s=f"{last['perf/tokens_per_s']:.0f}")
            bar.update(1)
            if result.stop or (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0):
                self.save_checkpoint()
                saved_at, last_end = self.step, time.perf_counter()
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.steps:
                self._evaluate()
                last_end = time.perf_counter()
            if result.stop:
                break
        bar.close()
        if saved_at != self.step:
            self.save_checkpoint()
        final = {**last, **self._evaluate()} if self.step >= cfg.steps else last
        return self._finish(final) if self.rank == 0 else None

    def _evaluate(self) -> dict[str, float]:
        cfg = self.cfg
        metrics = evaluate(self.engine, self.val_docs, cfg.model, cfg.eval.batch_size, cfg.eval.bucket_tokens,
                           self.val_info.bos_id, self.val_info.eos_id, self.dtype, self.device,
                           max_tokens=cfg.eval.max_doc_tokens)
        if self.rank == 0:
            # Every evaluation on the tokens axis: a step whose train metrics were not logged gets its count here.
            logged_this_step = self.step > 0 and self.step % cfg.tracking.log_every == 0
            self.tracker.log(self.step, metrics if logged_this_step else metrics | self._tokens_metric())
            _append_line(os.path.join(cfg.run_dir, EVAL_LOG), {"step": self.step, **metrics})
        return metrics

    def _finish(self, final: dict[str, float]) -> dict[str, float]:
        cfg = self.cfg
        config_path = os.path.join(cfg.run_dir, "config.yaml")
        write_atomic(config_path, to_yaml(cfg).encode())
        final_path = os.path.join(cfg.run_dir, FINAL_METRICS)
        write_atomic(final_path, json.dumps({"step": self.step, **final}, indent=1).encode())
        done = self.step >= cfg.steps
        if not done:
            print(f"rmat train: stopped by a signal at step {self.step}; checkpointed, run the same command to "
                  "continue")
        # KILLED until the run is complete: a resumed run sets it RUNNING again.
        if not self.tracker.close(artifacts=[config_path, final_path], status="FINISHED" if done else "KILLED"):
            print(f"rmat train: the tracker was unreachable; unsent points wait in {self.tracker.outbox} "
                  "and go out when this training starts again or its pipeline's evaluate stage runs")
        return final


def _append_line(path: str, record: dict) -> None:
    # Reopened per step so that a kill loses at most the line being written.
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _to(segment, device: torch.device):
    if device.type == "cpu":
        return segment
    return type(segment)(segment.inputs.to(device), segment.targets.to(device), segment.reset.to(device))


def train_process(cfg: TrainConfig, local_procs: int) -> Optional[dict[str, float]]:
    """Entry point of one training process (RANK/WORLD_SIZE/MASTER_* already in the environment)."""
    os.makedirs(cfg.run_dir, exist_ok=True)
    # A native abort (gloo, DeepSpeed) then prints every thread's Python stack: where it happened.
    faulthandler.enable()
    # DeepSpeed calls these renamed collectives on every step; the warning says nothing to a user.
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    trainer = Trainer(cfg, local_procs)
    try:
        result = trainer.run()
        # No rank may tear down gloo while another still has a collective in flight: its worker
        # threads would be destroyed mid-operation ("terminate called without an active exception").
        dist.barrier()
        return result
    finally:
        dist.destroy_process_group()
