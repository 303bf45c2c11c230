"""Recall across segments when `rmat train` itself does the training.

The task of benchmarks/long_context.py (MQAR: n key-value pairs in the first segment, d
filler segments, the keys asked in the last), written as token shards that the pipeline's
loader reads, trained by `rmat train` (DeepSpeed, one process) with its TBPTT windows of
``--tbptt`` segments, and scored like the benchmark: greedy accuracy at the answers of 1,024
held-out samples, read segment by segment with the memory carried.

Each sample is one document of exactly d + 2 segments once the loader puts BOS before it:
the sample's first token, filler, is dropped and BOS takes its place, so the stream the
pipeline reads is the sample itself, pairs and questions at the same positions (and chunks)
as in the reference loop's samples. Every row starts a document on the same step and a
window of d + 2 segments holds one whole sample. Each document carries its answers as loss
spans (data_prep.shards.loss_spans), so that the pipeline, like the benchmark's own loop,
takes its loss at the answers only; ``--loss all`` leaves them out to measure the loss on
every token instead (only the answers can be learned there: filler, keys and values are
random, so that loss's floor is near ln 64 and the answers carry a small share of the
gradient).

Beside each pipeline run, the benchmark's own loop trains the same model on the same cell
for the same steps (loss at the answers, backprop through the whole sample): the
reference the pipeline is to match. A document shows each answer after its question, as a
language model reads text, so with several pairs an answer rules itself out for the
questions after it: the value-set ceiling printed beside (H(n) / n, 0.52 at n = 4) is what
remembering the values without their keys scores.

``--variant name:key=value,...`` gives both trainers the same model overrides, on
long_context.py's `rmat` (the chunk summaries), or on the model's own defaults when the name is
``default`` (``--variant default``: the defaults as they are), e.g. the token shift and token memory
entries that let the tiny model bind several keys:

    python benchmarks/long_context_pipeline.py --n 1 --d 2 --tbptt 2,4 --seeds 3 --steps 1500 [--loss all]
    python benchmarks/long_context_pipeline.py --n 4 --d 1 --tbptt 3 --seeds 1 --steps 6000 \
        --variant tok8shift:token_shift=true,mem_tokens_per_chunk=8,mem_slots=360
    python benchmarks/long_context_pipeline.py --n 4 --d 8 --tbptt 2 --train-d 8 --train-d-ramp 4000 \
        --whole-short-documents --no-reference --seeds 3 --steps 6000 --variant default
    python benchmarks/long_context_pipeline.py --smoke      # CI: seconds

``--train-d K`` draws each training document's distance from 0..K (scored at the cell's d),
as real text mixes them: the pipeline's default windows of 2 segments then see whole
samples at d = 0, learn the write there, and the FIFO carries it further. ``--train-d-ramp N``
(with ``--train-d K``) writes them as a curriculum, read in the order written
(``data.shard_order: as_written``): a document's farthest distance grows from 1 to K over the
first N steps, as long_context.py's ramp draws a step's, at the step its row reads it.
``--whole-short-documents`` trains with ``data.whole_short_documents``: a document that fits in
a window is never split across two, so every one at d = 0 lies in one window, its write and
its questions under one backprop.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import parse_variant, print_table, rmat_train, run_resumable  # noqa: E402
from long_context import (  # noqa: E402
    BETA2,
    IGNORE,
    N_VALUES,
    TINY,
    VOCAB,
    Setting,
    Task,
    rmat_config,
    train_point,
    training_distance,
    value_set_ceiling,
)

from data_prep.byte_shards import write_id_shards  # noqa: E402
from pipeline.streams import may_begin  # noqa: E402
from pipeline.train import checkpoint  # noqa: E402

BOS_ID, EOS_ID = VOCAB, VOCAB + 1
DOCS_PER_SHARD = 4096


def task_of(n: int, d: int) -> Task:
    """The cell's task as documents: each question followed by its answer, the next token the loss reads."""
    return Task(n, d, TINY["segment_len"], lead=1, show_answers=True)


def answer_spans(targets: torch.Tensor) -> list[list[int]]:
    """Loss spans of a sample's answers: the answer to the key at sample position p is the
    document's id p (the document is the sample less its first token)."""
    return [[int(p), int(p) + 1] for p in torch.nonzero(targets != IGNORE).flatten()]


def ramp_distances(n_docs: int, train_d: int, ramp: int, rows: int, tbptt: int, gen: torch.Generator,
                   whole_short: bool = False) -> list[int]:
    """Distances of documents read in the order written and dealt to ``rows`` rows in turn, each drawn as
    long_context.training_distance draws a step's, at the step at which its row reaches it (a document at
    distance d is d + 2 segments; a step reads ``tbptt`` of a row's). With ``whole_short``
    (``data.whole_short_documents``) a document that fits in a window but not in what is left of the
    current one starts at the next window, as the loader pads the row up to it."""
    read, distances = [0] * rows, []
    for i in range(n_docs):
        row = i % rows
        d = training_distance(read[row] // tbptt, train_d, ramp, gen)
        room = tbptt - read[row] % tbptt
        if whole_short and not may_begin(d + 2, room, tbptt, align_ends=False):
            read[row] += room  # the loader's rule: the row pads up to the next window
        read[row] += d + 2
        distances.append(d)
    return distances


def write_task_shards(folder: Path, task: Task, n_train: int, n_val: int, seed: int, answers_only: bool,
                      train_d: int = -1, ramp: tuple[int, int, int] = (0, 0, 0), whole_short: bool = False) -> None:
    """``n_train`` + ``n_val`` samples as documents of (d + 2) * S - 1 ids (the sample less its first token,
    where the loader puts BOS), the format of the shard stage,
    with the answers as loss spans when ``answers_only``. With ``train_d`` >= 0 each training document
    has its own distance, drawn from 0..train_d; the validation documents keep the task's. ``ramp`` (steps, rows,
    TBPTT window), when its steps are > 0, draws them as ``ramp_distances`` does, short ones first (``whole_short``
    as there)."""
    gen = torch.Generator().manual_seed(seed)

    def meta(split: str, i: int, row: torch.Tensor, targets: torch.Tensor) -> dict:
        m = {"source": "mqar", "domain": "documents", "doc_hash": f"{split}{i}", "tokens": len(row) - 1}
        return {**m, "loss_spans": answer_spans(targets)} if answers_only else m

    def samples(n_docs: int, max_d: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if max_d < 0:
            return list(zip(*task.sample(n_docs, gen), strict=True))
        if ramp[0] > 0:
            distances = torch.tensor(ramp_distances(n_docs, max_d, *ramp, gen, whole_short))
        else:
            distances = torch.randint(0, max_d + 1, (n_docs,), generator=gen)
        rows: list = [None] * n_docs
        for d in distances.unique().tolist():  # one batch per distance, then back in the drawn order
            at = torch.nonzero(distances == d).flatten().tolist()
            for i, row in zip(at, zip(*replace(task, distance=d).sample(len(at), gen), strict=True), strict=True):
                rows[i] = row
        return rows

    def shards(n_docs: int, split: str, max_d: int) -> list[list[tuple[str, np.ndarray, dict]]]:
        docs = [(f"{split}{i:07d}", row[1:].numpy().astype(np.uint16), meta(split, i, row, targets))
                for i, (row, targets) in enumerate(samples(n_docs, max_d))]
        return [docs[i:i + DOCS_PER_SHARD] for i in range(0, n_docs, DOCS_PER_SHARD)]

    name = f"mqar-{task.n_pairs}-{task.distance}-{seed}-{int(answers_only)}-{train_d}"
    if ramp[0] > 0:
        name += f"-ramp{ramp[0]}"
    write_id_shards(str(folder), {"train": shards(n_train, "train", train_d), "val": shards(n_val, "val", -1)},
                    VOCAB + 2, BOS_ID, EOS_ID, name,
                    {"sha256": "mqar-v1", "model": "", "model_type": "mqar"})


def variant_setting(variant: str, overrides: dict) -> tuple[Setting, bool]:
    """long_context.py's setting of a variant and its token shift, which train_point takes on its own: the
    variant named ``default`` is the model's own defaults at the tiny shape (long_context.py's `default`),
    any other long_context.py's `rmat`, the chunk summaries; ``overrides`` on top of either."""
    if variant == "default":
        return Setting("default", overrides), overrides.get("token_shift", True)  # the defaults hold the shift
    return (Setting("rmat", {k: v for k, v in overrides.items() if k != "token_shift"}),
            overrides.get("token_shift", False))


def pipeline_model(variant: str, overrides: dict) -> dict:
    """The model config `rmat train` gets for a variant: the one the benchmark's loop builds, whole, with
    the vocabulary's BOS and EOS added."""
    return {**asdict(rmat_config(*variant_setting(variant, overrides))), "vocab_size": VOCAB + 2}


def train_config(shards: Path, run_dir: Path, tbptt: int, steps: int, batch: int, lr: float, seed: int,
                 model: dict, shard_order: str = "shuffled", whole_short: bool = False) -> dict:
    """The pipeline's training config on ``model`` (``pipeline_model``) with the benchmark loop's AdamW
    beta2; TBPTT windows of ``tbptt`` segments."""
    return {"model": model,
            "data": {"shards": str(shards), "batch_size": batch, "tbptt_segments": tbptt, "shard_order": shard_order,
                     "whole_short_documents": whole_short},
            "optim": {"lr": lr, "warmup_steps": max(1, steps // 20), "beta2": BETA2},
            "engine": {"zero_stage": 0, "threads_per_proc": 1},
            "checkpoint": {"every": 0}, "eval": {"every": 0, "max_docs": 16},
            "steps": steps, "seed": seed, "run_dir": str(run_dir)}


@torch.no_grad()
def pipeline_accuracy(run_dir: Path, task: Task, seed: int, n_samples: int = 1024) -> float:
    """Accuracy at the answers of held-out samples, read as the loader presents them (BOS in place of
    the first token)."""
    model = checkpoint.load_model(str(run_dir)).eval()
    tokens, targets = task.sample(n_samples, torch.Generator().manual_seed(10_000 + seed))
    stream = torch.cat([torch.full((n_samples, 1), BOS_ID), tokens[:, 1:]], dim=1)  # as the loader feeds it
    s, state, logits = task.segment_len, model.init_state(n_samples), []
    for i in range(0, stream.shape[1], s):
        out, state = model(stream[:, i:i + s], state)
        logits.append(out)
    guess, asked = torch.cat(logits, dim=1).argmax(-1), targets != IGNORE
    return float((guess[asked] == targets[asked]).float().mean())


def run_point(point: dict) -> dict:
    """Train and score one point: `rmat train` with TBPTT windows of ``point["tbptt"]`` segments, or
    (window 0) the benchmark's own loop, the reference."""
    torch.set_num_threads(1)  # points run side by side, one core each
    return pipeline_point(point) if point["tbptt"] else reference_point(point)


def pipeline_point(point: dict) -> dict:
    n, d, tbptt, seed, train_d, ramp, steps, batch = (
        point[k] for k in ("n", "d", "tbptt", "seed", "train_d", "train_d_ramp", "steps", "batch"))
    task = task_of(n, d)
    whole_short = point["whole_short"]
    mixed = (f"-t{train_d}" if train_d >= 0 else "") + (f"r{ramp}" if ramp else "") + ("-ws" if whole_short else "")
    folder = Path(point["out"]) / f"{point['variant']}-n{n}-d{d}{mixed}-w{tbptt}-s{seed}-{point['loss']}"
    shards = folder / "shards"
    # Enough documents that no row wraps into a second epoch: a ramp's first ones are the shortest, 2 segments.
    segments_per_doc = 2 if ramp else train_d / 2 + 2 if train_d >= 0 else task.n_segments
    docs_per_step = batch * max(1, math.ceil(tbptt / segments_per_doc))
    if not (shards / "manifest.json").exists():
        write_task_shards(shards, task, steps * docs_per_step + batch, 64, seed, point["loss"] == "answers", train_d,
                          (ramp, batch, tbptt), whole_short)
    config = train_config(shards, folder / "run", tbptt, steps, batch, point["lr"], seed,
                          pipeline_model(point["variant"], point["overrides"]),
                          "as_written" if ramp else "shuffled", whole_short)
    seconds = rmat_train(config, folder / "train.yaml")
    return {**record_fields(point), "accuracy": pipeline_accuracy(folder / "run", task, seed),
            "seconds": round(seconds, 1)}


def reference_point(point: dict) -> dict:
    """The benchmark's own loop on the same cell, steps, batch and learning rate."""
    setting, shift = variant_setting(point["variant"], point["overrides"])
    r = train_point(dict(setting=vars(setting), task=vars(task_of(point["n"], point["d"])), seed=point["seed"],
                         steps=point["steps"], window=0, train_d=point["train_d"],
                         train_d_ramp=point["train_d_ramp"], batch=point["batch"],
                         lr=point["lr"], target_params=None, token_shift=shift))
    return {**record_fields(point), "accuracy": r["accuracy"], "seconds": r["seconds"]}


def record_fields(point: dict) -> dict:
    return {k: point[k] for k in ("trainer", "variant", "n", "d", "train_d", "train_d_ramp", "whole_short", "lead",
                                  "beta2", "tbptt", "seed", "steps")}


def summarize(records: list[dict], seeds: int) -> None:
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault(record_key(r)[:-2], []).append(r["accuracy"])
    rows = [[trainer, variant, str(n), str(d), distances_cell(t, ramp),
             window_cell(w, whole_short), f"{np.mean(a):.3f} ({min(a):.2f}-{max(a):.2f})", str(len(a)),
             f"{ceiling(n, d):.3f}"]
            for (trainer, variant, n, d, t, ramp, whole_short, _, _, w), a in groups.items()]
    print(f"\nMQAR accuracy across segments, trained by rmat train and by the benchmark's loop "
          f"(chance {1 / N_VALUES:.3f}; {seeds} seeds)\n")
    print_table(["trainer", "model", "n", "d", "trained on distances", "backprop window (segments)",
                 "accuracy mean (min-max)", "seeds", "value-set ceiling"], rows)


def distances_cell(train_d: int, ramp: int) -> str:
    if train_d < 0:
        return "the cell's"
    return f"0..{train_d}" + (f", the farthest from 1 up over {ramp} steps" if ramp else "")


def window_cell(tbptt: int, whole_short: bool) -> str:
    if tbptt == 0:
        return "whole sample"
    return f"{tbptt}" + (", documents that fit one kept whole" if whole_short else "")


def record_key(r: dict) -> tuple:
    """What tells points apart; records written before a field existed read as its default (before
    ``lead``, the stream read each sample one token late; before ``beta2``, `rmat train` took the
    pipeline's default 0.95)."""
    beta2 = r.get("beta2", BETA2 if r["trainer"] == "benchmark loop" else 0.95)
    return (r["trainer"], r.get("variant", "rmat"), r["n"], r["d"], r.get("train_d", -1), r.get("train_d_ramp", 0),
            r.get("whole_short", False), r.get("lead", 0), beta2, r["tbptt"], r["seed"], r["steps"])


def ceiling(n: int, d: int) -> float:
    """The value-set ceiling of the cell, on the held-out samples of seed 0."""
    _, targets = task_of(n, d).sample(1024, torch.Generator().manual_seed(10_000))
    return value_set_ceiling(targets, show_answers=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--d", type=int, default=2)
    p.add_argument("--tbptt", type=lambda s: [int(x) for x in s.split(",")], default=[2, 4])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", choices=["answers", "all"], default="answers",
                   help="the pipeline's loss at the answers (loss spans) or on every token")
    p.add_argument("--train-d", type=int, default=-1,
                   help="train on documents whose distances are drawn from 0..K, score on the cell's (-1: the cell's)")
    p.add_argument("--train-d-ramp", type=int, default=0,
                   help="with --train-d K: documents written and read in order, the farthest distance growing from 1 "
                        "to K over the first N steps")
    p.add_argument("--whole-short-documents", action="store_true",
                   help="rmat train with data.whole_short_documents: a document that fits in a window is never split "
                        "across two (padding instead)")
    p.add_argument("--variant", type=parse_variant, default=("rmat", {}),
                   help="name:key=value,... model overrides for both trainers, on the model's own defaults "
                        "when the name is default, else on long_context.py's rmat, the chunk summaries (the default)")
    p.add_argument("--out", default="runs/benchmarks/long_context_pipeline")
    p.add_argument("--jobs", type=int, default=2, help="points trained at once, one core each")
    p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                   help="train the benchmark's own loop beside each seed's pipeline runs (--no-reference: only those)")
    p.add_argument("--smoke", action="store_true", help="a few steps of one seed: the path works, in seconds")
    args = p.parse_args()
    if args.train_d_ramp and args.train_d < 0:
        p.error("--train-d-ramp N widens the distances of --train-d K; give --train-d too")
    task = task_of(args.n, args.d)
    if task.lead + 2 * args.n > task.segment_len:
        p.error(f"--n {args.n}: the loader's BOS takes a document's first token, so at most "
                f"{(task.segment_len - task.lead) // 2} pairs fit the first segment of {task.segment_len}")
    if args.smoke:
        args.tbptt, args.seeds, args.steps, args.batch = [4], 1, 4, 4
        args.out = str(Path(args.out) / "smoke")
    points = [dict(trainer=f"rmat train, loss at {args.loss}" if window else "benchmark loop",
                   variant=args.variant[0], overrides=args.variant[1], n=args.n, d=args.d, train_d=args.train_d,
                   train_d_ramp=args.train_d_ramp, whole_short=args.whole_short_documents and window > 0,
                   lead=task.lead, beta2=BETA2, tbptt=window, seed=seed, steps=args.steps,
                   batch=args.batch, lr=args.lr, loss=args.loss, out=args.out)
              for seed in range(args.seeds) for window in [0] * args.reference + args.tbptt]  # 0: the reference
    records = run_resumable(points, record_key, run_point, Path(args.out) / "results.jsonl", args.jobs, report)
    summarize(records, args.seeds)


def report(r: dict) -> None:
    print(f"  {r['trainer']:>14} n={r['n']} d={r['d']} window={r['tbptt']} seed={r['seed']}  "
          f"acc {r['accuracy']:.3f}  ({r['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
