"""Passkey retrieval across segments when `rmat train` does the training, copy first.

Byte-level passkey documents over the standard library's source, made as the shard
stage's passkey mix makes them (data_prep/passkey.py: "The pass key is N. Remember it. N
is the pass key." in the first segment, "What is the pass key? The pass key is N" ending
segment d, the answer the document's only loss span), written as token shards that the
pipeline's loader reads, and trained by `rmat train` (DeepSpeed, one process, windows of
``--tbptt`` segments: the pipeline's default 2) in stages chained by ``init_from``, each on
its own shards: ``--schedule 0:600,1:2200:lead=3,8:800:lr=1e-3:lead=3`` trains 600 steps on
distance 0 alone (the in-segment copy), then 2,200 on distances drawn from 0..1 (a window of
2 segments then holds both the key and its question, so the write gets a gradient), then
800 on 0..8 (the reads of a full FIFO) at a learning rate of its own (``--lr`` where a stage
names none). ``lead=N`` puts each document's key after 0..N segments of filler, so that it
is written into a memory that already holds text; without it the key lies in the document's
first segment. ``until=R`` repeats a stage's training (``rounds=N`` times at most, 3 by
default; each round from the last one's weights, on fresh shards) until keys in the first
segment are retrieved R of the time past distance 0: the next stage then begins once the
memory carries, whenever a seed learns to (``1:1000:until=0.6:rounds=4,1:2000:lr=3e-4:lead=3``).
Each schedule is a point; ``8:3600``, the same steps on the mixed distances throughout as the
shard stage's passkey mix would give them, is the baseline. ``--whole``
has the loader keep a document that fits in a window within one
(``data.whole_short_documents``); by default a document may straddle two windows.
``align=start`` does the same for one stage, ``align=end`` also ends every longer document
where a window ends (``data.align_document_ends``), so a document's question shares a window
with the segment before it whatever the key's lead.

Scored as the evaluate stage scores passkey (pipeline/train/passkey.py): ``--samples``
held-out samples per distance, a sample right when greedy prediction gives every answer
byte, read with the memory carried and, as the no-memory baseline beside it, emptied before
every segment; and, in a second table, with the key after max(distances) - d segments of
filler (the Landmark protocol's key at a random place of one long context). Model: the
quickstart's (d_model 128, 2 layers, 4 heads, S 128, C 32, M 32: the FIFO reaches 8
segments back), ``model.mix_init`` per ``--settings``. A schedule that begins with the
stages of another point (same setting, loader and seed) copies that point's finished
trainings instead of training them again, and each run folder keeps its scores
(``passkey_scores.json``, under its checkpoint, the scoring settings and code), so a
schedule extended by a training costs that training alone.

    python benchmarks/passkey_pipeline.py --schedules 0:600,1:2200,8:800 8:3600 --seeds 3
    # the measured recipe (docs/design.md, section 2): 0.9 at 4 and 8 segments back in 32,000 steps
    TAIL=8:2000:lr=1e-4:lead=3:align=end,1:2000:lr=1e-4:lead=3:align=end
    python benchmarks/passkey_pipeline.py --whole --jobs 3 --schedules \\
        0:1000,1:3000,8:2000:lr=1e-3,1:4000:lr=3e-4:lead=3,1:6000:lr=3e-4:lead=3:align=end,$TAIL,$TAIL,$TAIL,$TAIL
    python benchmarks/passkey_pipeline.py --smoke      # CI: seconds
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import print_table, rmat_train, run_resumable, stdlib_byte_documents  # noqa: E402

import data_prep.passkey  # noqa: E402
import pipeline.train.passkey  # noqa: E402
from data_prep.atomic import read_json, write_atomic  # noqa: E402
from data_prep.byte_shards import write_id_shards  # noqa: E402
from data_prep.passkey import filler_stream, make_sample, training_documents  # noqa: E402
from model.config import CHUNK_SUMMARIES  # noqa: E402
from pipeline.train import checkpoint  # noqa: E402
from pipeline.train.files import FINAL_METRICS, latest_meta  # noqa: E402
from pipeline.train.passkey import retrieved  # noqa: E402

BOS_ID, EOS_ID = 256, 257
# The chunk summaries, on which the recorded numbers were measured (model.config.CHUNK_SUMMARIES).
MODEL = dict(vocab_size=258, d_model=128, n_layers=2, n_heads=4, segment_len=128, chunk_len=32, **CHUNK_SUMMARIES)
DOCS_PER_SHARD = 2048
SCORES = "passkey_scores.json"
SCHEDULE = "schedule.txt"  # a point folder's schedule, as given
NAME_MAX = 255  # bytes of a file name on Linux file systems


def encode(text: str) -> list[int]:
    return list(text.encode())


def filler_documents() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Train and held-out filler documents: the stdlib's modules, the last tenth held out."""
    docs = stdlib_byte_documents(max_files=400, max_file_bytes=20_000)
    cut = len(docs) * 9 // 10
    return docs[:cut], docs[cut:]


def documents_for(steps: int, batch: int, tbptt: int, max_distance: int, max_lead: int) -> int:
    """Passkey documents that ``steps`` steps read (a document of lead l and distance d fills l + d + 1
    segments), with a tenth more, so that no row reads a document twice."""
    mean_segments = 1 + max_distance / 2 + max_lead / 2
    return math.ceil(steps * batch * tbptt / mean_segments * 1.1) + batch


def write_passkey_shards(folder: Path, filler: list[np.ndarray], count: int, max_distance: int, max_lead: int,
                         seed: int) -> None:
    """``count`` training documents of distances 0..``max_distance``, the key after 0..``max_lead`` segments
    of filler (and a few held out), as token shards."""
    rng = np.random.default_rng(seed)

    def shards(n: int, split: str) -> list[list[tuple[str, np.ndarray, dict]]]:
        docs = training_documents(filler, encode, n, MODEL["segment_len"], max_distance, BOS_ID, EOS_ID, rng,
                                  max_lead)
        records = [(f"{split}{i:07d}", ids.astype(np.uint16),
                    {"source": "passkey", "domain": "documents", "doc_hash": f"{split}{seed}-{i}", "tokens": len(ids),
                     "loss_spans": spans}) for i, (ids, spans) in enumerate(docs)]
        return [records[i:i + DOCS_PER_SHARD] for i in range(0, n, DOCS_PER_SHARD)]

    write_id_shards(str(folder), {"train": shards(count, "train"), "val": shards(16, "val")}, MODEL["vocab_size"],
                    BOS_ID, EOS_ID, f"passkey-{max_distance}-{count}-{seed}",
                    {"sha256": "passkey-bytes-v1", "model": "", "model_type": "bytes"})


def train_config(shards: Path, run_dir: Path, overrides: dict, steps: int, lr: float, args: dict,
                 init_from: str = "", align: str = "") -> dict:
    """The pipeline's training config on the quickstart's byte model; windows of ``tbptt`` segments, documents
    aligned to them as ``align`` says (Stage.align)."""
    return {"model": {**MODEL, **overrides},
            "data": {"shards": str(shards), "batch_size": args["batch"], "tbptt_segments": args["tbptt"],
                     "whole_short_documents": align == "start" or (args["whole"] and not align),
                     "align_document_ends": align == "end"},
            "optim": {"lr": lr, "warmup_steps": max(1, steps // 20)},
            "engine": {"zero_stage": 0, "threads_per_proc": 1},
            "checkpoint": {"every": 0}, "eval": {"every": 0, "max_docs": 4},
            "steps": steps, "seed": args["seed"], "run_dir": str(run_dir), "init_from": init_from}


@torch.no_grad()
def passkey_accuracy(run_dir: Path, held_out: list[np.ndarray], distances: list[int], samples: int,
                     seed: int) -> dict[str, list[float]]:
    """Per distance: [share retrieved with the memory carried, with it emptied every segment, and carried with
    the key after max(distances) - d segments of filler]: the last reads every sample at the same length, the
    key at a random segment of it as in the Landmark protocol, written into a memory that already holds text."""
    torch.set_num_threads(1)
    model = checkpoint.load_model(str(run_dir)).eval()
    filler, out, longest = filler_stream(held_out, EOS_ID, BOS_ID), {}, max(distances)
    for d in distances:
        rng = np.random.default_rng(10_000 + 100 * seed + d)
        drawn = [make_sample(filler, encode, d, MODEL["segment_len"], BOS_ID, rng) for _ in range(samples)]
        led = [make_sample(filler, encode, d, MODEL["segment_len"], BOS_ID, rng, lead=longest - d)
               for _ in range(samples)]
        out[f"d{d}"] = [retrieved(model, drawn, MODEL["segment_len"], reset) / samples for reset in (False, True)]
        out[f"d{d}"].append(retrieved(model, led, MODEL["segment_len"], False) / samples)
    return out


def scoring_code() -> str:
    """A hash of the code that makes, reads and scores a sample: an edit to it must not be answered with scores
    made before it."""
    parts = [inspect.getsource(f) for f in (encode, filler_documents, passkey_accuracy)]
    parts += [inspect.getsource(m) for m in (data_prep.passkey, pipeline.train.passkey)]
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def cached_scores(run_dir: Path, settings: dict, score: Callable[[], dict]) -> dict:
    """``score()`` of the run's latest checkpoint, kept in the run folder under that checkpoint, ``settings`` and
    the scoring code, and read back when all three are the same: a schedule extended by a training reruns its
    finished trainings as no-ops, and rescoring each took minutes."""
    key = json.dumps({"checkpoint": latest_meta(str(run_dir))["tag"], "settings": settings, "code": scoring_code()},
                     sort_keys=True)
    path = run_dir / SCORES
    kept = read_json(str(path)) or {}
    if key not in kept:
        kept[key] = score()
        write_atomic(str(path), json.dumps(kept).encode())
    return kept[key]


@dataclass(frozen=True)
class Stage:
    """One training of a schedule: distances drawn from 0..max_distance, keys after 0..lead filler segments;
    with ``until`` > 0, repeated (at most ``rounds`` times) until the memory carries that much."""

    max_distance: int
    steps: int
    lr: float
    lead: int = 0
    until: float = 0.0
    rounds: int = 1
    align: str = ""  # "start" or "end": the loader's alignment for this training; "": the point's --whole

    def label(self) -> str:
        lead = f", lead 0-{self.lead}" if self.lead else ""
        lead += f", documents aligned to windows' {self.align}s" if self.align else ""
        until = f", until {self.until:g} past d = 0 (at most {self.rounds} rounds)" if self.until else ""
        return f"{self.steps} steps at 0-{self.max_distance}{lead} (lr {self.lr:g}){until}"

    def done(self, scores: dict[str, list[float]]) -> bool:
        """Whether a round scored ``scores`` ends the stage: always without ``until``, else once the keys in the
        first segment are retrieved ``until`` of the time, averaged over the distances past 0."""
        far = [v[0] for k, v in scores.items() if k.startswith("d") and int(k[1:]) > 0]
        return not self.until or (bool(far) and sum(far) / len(far) >= self.until)


def parse_schedule(spec: str, lr: float) -> list[Stage]:
    """``max_distance:steps[:lr=X][:lead=N][:align=start|end][:until=R[:rounds=N]],...`` as one Stage per
    training, in order; a stage without its own learning rate takes ``lr``, one without a lead puts its keys in
    their document's first segment, one with ``until`` repeats up to ``rounds`` (3) times."""
    try:
        stages = [_stage(text, lr) for text in spec.split(",")]
    except (ValueError, IndexError):
        raise ValueError(f"schedule {spec!r}: give max_distance:steps[:lr=X][:lead=N][:align=start|end]"
                         "[:until=R[:rounds=N]],... (integers, steps >= 1, lr > 0, lead >= 0, align start or end, "
                         "0 < until <= 1 with max_distance > 0, rounds >= 1)") from None
    return stages


def _stage(text: str, lr: float) -> Stage:
    fields = text.split(":")
    options = dict(field.split("=", 1) for field in fields[2:])
    if set(options) - {"lr", "lead", "align", "until", "rounds"} or ("rounds" in options and "until" not in options):
        raise ValueError(text)
    if options.get("align", "start") not in ("start", "end"):
        raise ValueError(text)
    until = float(options.get("until", 0))
    stage = Stage(int(fields[0]), int(fields[1]), float(options.get("lr", lr)), int(options.get("lead", 0)),
                  until, int(options.get("rounds", 3 if until else 1)), options.get("align", ""))
    if stage.max_distance < 0 or stage.steps < 1 or not stage.lr > 0 or stage.lead < 0 or stage.rounds < 1:
        raise ValueError(text)
    if "until" in options and not (0 < until <= 1 and stage.max_distance > 0):
        raise ValueError(text)
    return stage


def point_folder(args: dict, schedule: str) -> Path:
    """Everything that changes what a training computes names its folder: a rerun with other values must not
    resume a finished training of these and score it as theirs. A schedule too long for a file name is named by
    its hash, and every folder keeps its schedule in ``SCHEDULE``."""
    name = f"{args['setting']}-{schedule.replace(':', 'x')}{_loader_and_seed(args)}"
    if len(name) > NAME_MAX:
        name = f"{args['setting']}-{hashlib.sha256(schedule.encode()).hexdigest()[:16]}{_loader_and_seed(args)}"
    return Path(args["out"]) / name


def _loader_and_seed(args: dict) -> str:
    return f"-b{args['batch']}-w{args['tbptt']}{'-whole' if args['whole'] else ''}-lr{args['lr']}-s{args['seed']}"


def reuse_finished(point: Path, tag: str, stages: list[Stage], i: int, args: dict) -> None:
    """Copy training ``tag`` (of stage ``i``) into ``point`` from another point whose schedule begins with
    ``stages[:i + 1]`` and whose training finished, so that a schedule extended by a training retrains none of
    the ones it shares; the copy lands under a temporary name, then is renamed."""
    if (point / f"run-{tag}").exists():
        return
    head, tail = f"{args['setting']}-", _loader_and_seed(args)
    for other in sorted(point.parent.glob(f"{head}*{tail}")):
        try:
            schedule = (other / SCHEDULE).read_text().strip()
        except OSError:
            continue
        shared = parse_schedule(schedule, args["lr"])[:i + 1]
        if shared == stages[:i + 1] and (other / f"run-{tag}" / FINAL_METRICS).exists():
            for folder in (f"shards-{tag}", f"run-{tag}"):
                if (point / folder).exists():  # the shards of a copy cut short before its run's
                    continue
                shutil.rmtree(point / f"{folder}.tmp", ignore_errors=True)
                shutil.copytree(other / folder, point / f"{folder}.tmp", symlinks=True)
                (point / f"{folder}.tmp").rename(point / folder)
            return


def train_point(args: dict) -> dict:
    """The trainings of one (setting, schedule, seed) point in turn, each from the last one's weights
    and scored at its end; a stage's rounds in turn until it is done."""
    point = point_folder(args, args["schedule"])
    point.mkdir(parents=True, exist_ok=True)
    write_atomic(str(point / SCHEDULE), args["schedule"].encode())
    train_filler, held_out = filler_documents()
    stages = parse_schedule(args["schedule"], args["lr"])
    scores, seconds, init_from, steps = [], 0.0, "", 0
    for i, stage in enumerate(stages):
        for r in range(stage.rounds):
            # Round 0 keeps the folder names of a stage without rounds, so their trainings are reused.
            tag = f"{i}" if r == 0 else f"{i}.{r}"
            shards, run_dir = point / f"shards-{tag}", point / f"run-{tag}"
            reuse_finished(point, tag, stages, i, args)
            if not (shards / "manifest.json").exists():
                count = documents_for(stage.steps, args["batch"], args["tbptt"], stage.max_distance, stage.lead)
                write_passkey_shards(shards, train_filler, count, stage.max_distance, stage.lead,
                                     1000 * args["seed"] + i + 100 * r)
            config = train_config(shards, run_dir, {"mix_init": args["setting"]}, stage.steps, stage.lr, args,
                                  init_from, stage.align)
            seconds += rmat_train(config, point / f"train-{tag}.yaml")
            steps += stage.steps
            score = cached_scores(run_dir, {k: args[k] for k in ("distances", "samples", "seed")},
                                  partial(passkey_accuracy, run_dir, held_out, args["distances"], args["samples"],
                                          args["seed"]))
            init_from = str(run_dir)
            line = " ".join(f"d{d} {score[f'd{d}'][0]:.2f}" for d in args["distances"])
            print(f"    {args['setting']} {args['schedule']} seed={args['seed']} "
                  f"step {steps}: retrieved {line} ({seconds:.0f} s)", file=sys.stderr, flush=True)
            if stage.done(score):
                break
        scores.append({"steps": steps, "max_distance": stage.max_distance, "rounds": r + 1, **score})
    return {**args, "scores": scores, "seconds": round(seconds, 1)}


def point_key(r: dict) -> tuple:
    return (r["setting"], r["schedule"], r["seed"], tuple(r["distances"]), r["batch"], r["tbptt"], r["lr"],
            r["samples"], r["whole"])


def summarize(records: list[dict], args: argparse.Namespace) -> None:
    rows, led = [], []
    for setting in args.settings:
        for schedule in args.schedules:
            # A row after each stage: the stages before the last are the baseline the last one is judged by.
            stages = parse_schedule(schedule, args.lr)
            for i in range(len(stages)):
                mine = [r["scores"][i] for r in records if r["setting"] == setting and r["schedule"] == schedule]
                label = ", then ".join(s.label() for s in stages[:i + 1])
                if stages[i].until:
                    label += f": {' / '.join(str(m['rounds']) for m in mine)} rounds by seed"
                rows.append([setting, label, *(_cell([m[f"d{d}"][0] for m in mine]) for d in args.distances),
                             _cell([m[f"d{d}"][1] for m in mine for d in args.distances if d > 0])])
                led.append([setting, label, *(_cell([m[f"d{d}"][2] for m in mine]) for d in args.distances)])
    fit = "short documents whole in a window" if args.whole else "documents straddling windows"
    print(f"\nPasskey retrieved (every answer byte right) by models `rmat train` trained, windows of "
          f"{args.tbptt} segments ({fit}), batch {args.batch}; mean (min-max) over {args.seeds} seeds, "
          f"{args.samples} held-out samples per distance\n")
    print_table(["setting", "training", *(f"d = {d}" for d in args.distances), "memory reset, d > 0"], rows)
    print(f"\nThe same, the key after {max(args.distances)} - d segments of filler (every sample "
          f"{max(args.distances) + 1} segments long, the key written into a memory that holds text)\n")
    print_table(["setting", "training", *(f"d = {d}" for d in args.distances)], led)


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p.add_argument("--settings", type=lambda s: s.split(","), default=["one_path_per_head"],
                   help="model.mix_init values")
    p.add_argument("--schedules", nargs="+", default=["0:600,1:2200,8:800", "8:3600"],
                   metavar="MAX_DISTANCE:STEPS[:lr=X][:lead=N][:align=start|end][:until=R[:rounds=N]],...",
                   help="one point each: its trainings in turn")
    p.add_argument("--distances", type=ints, default=[0, 1, 2, 4, 8], help="scored")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tbptt", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--whole", action="store_true",
                   help="data.whole_short_documents: a document that fits in a window is read within one")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="runs/benchmarks/passkey_pipeline")
    p.add_argument("--smoke", action="store_true", help="a few steps of one seed: the path works, in seconds")
    args = p.parse_args()
    if args.smoke:
        args.schedules, args.seeds, args.batch, args.samples = ["0:2,2:4:lead=1:align=end:until=1:rounds=2"], 1, 2, 4
        args.distances, args.jobs = [0, 2], 1
        args.out = str(Path(args.out) / "smoke")
    for schedule in args.schedules:
        try:
            parse_schedule(schedule, args.lr)
        except ValueError as e:
            p.error(str(e))
    points = [dict(setting=s, schedule=schedule, seed=seed, distances=args.distances, batch=args.batch,
                   tbptt=args.tbptt, lr=args.lr, samples=args.samples, whole=args.whole, out=args.out)
              for s in args.settings for schedule in args.schedules for seed in range(args.seeds)]
    records = run_resumable(points, point_key, train_point, Path(args.out) / "results.jsonl", args.jobs)
    summarize(records, args)


if __name__ == "__main__":
    main()
