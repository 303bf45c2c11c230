"""How fast a model learns to copy a pass key, per initial mix of its attention paths.

Passkey samples (data_prep/passkey.py: "The pass key is N. Remember it. N is the pass
key." in text, "What is the pass key? The pass key is N" at the end), byte-level over the
standard library's source, trained from scratch with the loss at the answer only, as the
pipeline's passkey mix trains it. At distance 0 the key and its question share a segment,
so the task is the in-segment copy that induction heads do; past 0 only the memory can
carry the key. Each point trains the quickstart's model (d_model 128, 2 layers, 4 heads,
S 128, C 32, M 32) for ``--steps`` steps of ``--batch`` samples and is scored every
``--every`` steps on ``--samples`` held-out samples (256): the share of answer bytes right (the leading
space and five digits: 1/6 + 5/6 * 0.1 = 0.25 is what knowing only the format gives) and
of samples with every byte right.

Settings:

    equal              RMAT, every head's path mix starting equal (the paper's reading)
    one_path_per_head  RMAT, head h starting almost wholly on path h mod 3 (model.mix_init)
    global             a plain causal transformer on the segment (no local path, no memory)

``--variant name:key=value,...`` adds a setting: the default RMAT with those config overrides.

    python benchmarks/passkey_copy.py --seeds 3 --steps 1000        # distance 0
    python benchmarks/passkey_copy.py --distances 0,1,2 --steps 3000
    python benchmarks/passkey_copy.py --settings one_path_per_head \
        --variant fine:mix_init=one_path_per_head,chunk_len=8,mem_slots=64 --distances 0,1
    python benchmarks/passkey_copy.py --distances 0,1 --curriculum 1000 --steps 2500   # copy first
    python benchmarks/passkey_copy.py --distances 0,1,2,4,8 --curriculum 1000 --tbptt 2  # the pipeline's windows
    python benchmarks/passkey_copy.py --device cuda --batch 64 --distances 0,1,2,4,8 --curriculum 600 \
        --tbptt 2 --lead 3 --lead-from 1800 --steps 3000   # keys after text, once the memory carries
    python benchmarks/passkey_copy.py --distances 0,1,2,4,8 --curriculum 1000 --tbptt 2 --lead 3 \
        --lead-when 0.7 --steps 5000   # each seed's leads begin once it carries 0.7 of the bytes
    python benchmarks/passkey_copy.py --smoke                       # CI: seconds
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parse_variant, print_table, run_resumable, stdlib_byte_documents  # noqa: E402

from data_prep.passkey import filler_stream, make_sample  # noqa: E402
from model import RMAT, RMATConfig  # noqa: E402
from model.config import CHUNK_SUMMARIES  # noqa: E402

BOS_ID, EOS_ID = 256, 257
# The chunk summaries, on which the recorded numbers were measured (model.config.CHUNK_SUMMARIES).
MODEL = dict(vocab_size=258, d_model=128, n_layers=2, n_heads=4, segment_len=128, chunk_len=32, **CHUNK_SUMMARIES)
SETTINGS = {
    "equal": dict(mix_init="equal"),
    "one_path_per_head": dict(mix_init="one_path_per_head"),
    "global": dict(paths=["global"], mem_slots=0),
}


def encode(text: str) -> list[int]:
    return list(text.encode())


def filler_texts() -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out filler: the stdlib's modules, the last tenth held out."""
    docs = stdlib_byte_documents(max_files=400, max_file_bytes=20_000)
    cut = len(docs) * 9 // 10
    return filler_stream(docs[:cut], EOS_ID, BOS_ID), filler_stream(docs[cut:], EOS_ID, BOS_ID)


def batch(filler: np.ndarray, distance: int, n: int, rng: np.random.Generator,
          lead: int = 0) -> tuple[torch.Tensor, int]:
    """n samples with the key ``distance`` segments before its question, after ``lead`` segments of text."""
    samples = [make_sample(filler, encode, distance, MODEL["segment_len"], BOS_ID, rng, lead=lead) for _ in range(n)]
    return torch.from_numpy(np.stack([s.tokens for s in samples])), samples[0].answer_len


def answer_logits(model: RMAT, tokens: torch.Tensor, answer_len: int, tbptt: int = 0) -> torch.Tensor:
    """Logits at the answer's positions, the sample read segment by segment with the memory carried;
    with ``tbptt`` k > 0 the memory is detached every k segments counted back from the last, so the
    answer's gradient reaches the writes of its own window only, as the pipeline's windows do."""
    s, state = MODEL["segment_len"], model.init_state(tokens.shape[0])
    starts = range(0, tokens.shape[1] - 1, s)
    for n, i in enumerate(starts):
        if tbptt and (len(starts) - n) % tbptt == 0:
            state = state.detach()
        logits, state = model(tokens[:, i:i + s], state)
    return logits[:, -answer_len:]


@torch.no_grad()
def score(model: RMAT, filler: np.ndarray, distance: int, seed: int, lead: int = 0,
          samples: int = 256) -> tuple[float, float, list[float]]:
    """(answer bytes right, samples wholly right, each answer byte's share right) on ``samples``
    held-out samples, the key after ``lead`` segments of text."""
    rng = np.random.default_rng(10_000 + 100 * seed + distance + 1_000_000 * lead)
    tokens, a = batch(filler, distance, samples, rng, lead)
    tokens = tokens.to(next(model.parameters()).device)
    right = (answer_logits(model, tokens, a).argmax(-1) == tokens[:, -a:]).float()
    return float(right.mean()), float(right.all(-1).float().mean()), right.mean(0).tolist()


def training_distances(step: int, curriculum: int, distances: list[int]) -> list[int]:
    """The distances step ``step`` (from 1) draws from: 0 alone during the curriculum's steps."""
    return [0] if step <= curriculum else distances


def training_lead(step: int, lead_from: int, max_lead: int, rng: np.random.Generator) -> int:
    """Segments of text before the key at step ``step``: none up to step ``lead_from``, then 0..max_lead."""
    # No draw without a lead, so that runs without one draw the samples they always drew.
    return int(rng.integers(0, max_lead + 1)) if max_lead and step > lead_from else 0


def carries(point: dict, distances: list[int], threshold: float) -> bool:
    """Whether a scoring's keys in the first segment are recalled across segments: its answer bytes
    right, averaged over the distances past 0, reach ``threshold``."""
    far = [point[f"d{d}"][0] for d in distances if d > 0]
    return bool(far) and sum(far) / len(far) >= threshold


def train_point(args: dict) -> dict:
    """Train one (setting, seed) point from scratch on distances drawn from ``distances``, after
    ``curriculum`` steps of distance 0 alone (the in-segment copy first: mixed with longer
    distances from the start it is learned much more slowly). After the curriculum, or after step
    ``lead_from`` if later, with ``lead`` L > 0 the key follows 0..L segments of text, so it is
    written into a memory that holds some. With ``lead_when`` R > 0 the leads wait besides for the
    first scoring at which the memory ``carries`` (R of the answer bytes right past distance 0):
    seeds learn the carry at very different steps, and leads before it teach nothing."""
    torch.set_num_threads(1)
    torch.manual_seed(args["seed"])
    device = torch.device(args["device"])
    model = RMAT(RMATConfig(**{**MODEL, **args["overrides"]})).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args["lr"], weight_decay=0.1, betas=(0.9, 0.95))
    steps, warmup = args["steps"], max(1, args["steps"] // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / steps))))
    train_filler, val_filler = filler_texts()
    rng = np.random.default_rng(args["seed"])
    leads_after = max(args["curriculum"], args["lead_from"])
    leads_after = math.inf if args["lead_when"] else leads_after
    curve, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        distance = int(rng.choice(training_distances(step, args["curriculum"], args["distances"])))
        lead = training_lead(step, leads_after, args["lead"], rng)
        tokens, a = batch(train_filler, distance, args["batch"], rng, lead)
        tokens = tokens.to(device)
        logits = answer_logits(model, tokens, a, args["tbptt"])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, -a:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args["every"] == 0 or step == steps:
            model.eval()
            far = max(args["distances"])
            curve.append({"step": step,
                          **{f"d{d}": score(model, val_filler, d, args["seed"], samples=args["samples"])
                             for d in args["distances"]},
                          **{f"after_text_d{d}": score(model, val_filler, d, args["seed"], far - d, args["samples"])
                             for d in args["distances"]}})
            model.train()
            if leads_after == math.inf and step >= args["curriculum"] and carries(
                    curve[-1], args["distances"], args["lead_when"]):
                leads_after = max(step, args["lead_from"])
            scores = " ".join(f"d{d} {curve[-1][f'd{d}'][0]:.2f}" for d in args["distances"])
            print(f"    {args['setting']} seed={args['seed']} step {step}/{steps} loss {loss.item():.3f} "
                  f"bytes right {scores} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    leads_from = None if leads_after == math.inf or not args["lead"] else leads_after
    return {**args, "curve": curve, "leads_from": leads_from, "seconds": round(time.perf_counter() - start, 1)}


def point_key(r: dict) -> tuple:
    return (r["setting"], json.dumps(r["overrides"], sort_keys=True), r["seed"], r["steps"], tuple(r["distances"]),
            r["batch"], r["lr"], r["every"], r.get("curriculum", 0), r.get("tbptt", 0), r.get("lead", 0),
            r.get("lead_from", 0), r.get("samples", 256), r.get("lead_when", 0.0))


def run_points(args: argparse.Namespace) -> list[dict]:
    points = [dict(setting=s, overrides=args.overrides[s], seed=seed, steps=args.steps, distances=args.distances,
                   batch=args.batch, lr=args.lr, every=args.every, curriculum=args.curriculum,
                   tbptt=args.tbptt, lead=args.lead, lead_from=args.lead_from, lead_when=args.lead_when,
                   device=args.device, samples=args.samples)
              for s in args.settings for seed in range(args.seeds)]
    return run_resumable(points, point_key, train_point, Path(args.out) / "results.jsonl", args.jobs)


def summarize(records: list[dict], args: argparse.Namespace) -> None:
    steps = [c["step"] for c in records[0]["curve"]]
    for d in args.distances:
        rows = []
        for setting in args.settings:
            curves = [r["curve"] for r in records if r["setting"] == setting]
            rows.append([setting, *(_cell([c[i][f"d{d}"] for c in curves]) for i in range(len(steps)))])
        first = f", distance 0 alone for the first {args.curriculum} steps" if args.curriculum else ""
        first += f", windows of {args.tbptt} segments" if args.tbptt else ""
        first += (f", then keys after 0-{args.lead} segments of text"
                  f"{f' from step {args.lead_from}' if args.lead_from > args.curriculum else ''}" if args.lead else "")
        print(f"\nPasskey at distance {d}: answer bytes right, samples wholly right in brackets; "
              f"mean (min-max) over {args.seeds} seeds, batch {args.batch}{first}\n")
        print_table(["setting", *(f"step {s}" for s in steps)], rows)
        print(f"\nEach answer byte's share right at step {steps[-1]}, distance {d} (the space, then the digits)\n")
        by_byte = [[setting, *_last_by_byte(records, setting, d)] for setting in args.settings]
        print_table(["setting", *(f"byte {i + 1}" for i in range(len(by_byte[0]) - 1))], by_byte)
    far = max(args.distances)
    print(f"\nStep {steps[-1]}, the key after {far} - d segments of held-out text (every sample "
          f"{far + 1} segments long): answer bytes right, samples wholly right in brackets\n")
    after = [[setting, *(_cell([r["curve"][-1][f"after_text_d{d}"] for r in records if r["setting"] == setting])
                         for d in args.distances)] for setting in args.settings]
    print_table(["setting", *(f"d = {d}" for d in args.distances)], after)
    if args.lead_when:
        print(f"\nLeads began after the first scoring with {args.lead_when} of the answer bytes right past d = 0\n")
        print_table(["setting", "seed", "leads from step"],
                    [[r["setting"], str(r["seed"]), str(r["leads_from"] or "never")] for r in records])
    plot(records, args, steps, Path(args.out) / "passkey_copy.png")


def _last_by_byte(records: list[dict], setting: str, distance: int) -> list[str]:
    """Each answer byte's share right at the last scoring, mean over the setting's seeds."""
    shares = np.array([r["curve"][-1][f"d{distance}"][2] for r in records if r["setting"] == setting])
    return [f"{v:.2f}" for v in shares.mean(0)]


def _cell(points: list[list[float]]) -> str:
    byte = [p[0] for p in points]
    whole = sum(p[1] for p in points) / len(points)
    return f"{sum(byte) / len(byte):.2f} ({min(byte):.2f}-{max(byte):.2f}) [{whole:.2f}]"


def plot(records: list[dict], args: argparse.Namespace, steps: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.distances), figsize=(4.5 * len(args.distances), 3.5), squeeze=False)
    for ax, d in zip(axes[0], args.distances, strict=True):
        for setting in args.settings:
            curves = np.array([[c[f"d{d}"][0] for c in r["curve"]] for r in records if r["setting"] == setting])
            ax.plot(steps, curves.mean(0), marker="o", label=setting)
            ax.fill_between(steps, curves.min(0), curves.max(0), alpha=0.2)
        ax.set(title=f"distance {d} segments", xlabel="step", ylabel="answer bytes right", ylim=(0, 1))
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", type=lambda s: [x for x in s.split(",") if x], default=list(SETTINGS))
    p.add_argument("--variant", action="append", default=[], help="name:key=value,... RMAT config overrides")
    p.add_argument("--distances", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--curriculum", type=int, default=0, metavar="STEPS",
                   help="train on distance 0 alone for the first STEPS steps, then on --distances")
    p.add_argument("--tbptt", type=int, default=0, metavar="K",
                   help="backpropagate through the last K segments of a sample only (0: all of it)")
    p.add_argument("--lead", type=int, default=0, metavar="L",
                   help="after the curriculum, put the key after 0..L segments of text (drawn per step)")
    p.add_argument("--lead-from", type=int, default=0, metavar="STEP",
                   help="draw leads only after STEP (default: from the curriculum's end)")
    p.add_argument("--lead-when", type=float, default=0.0, metavar="R",
                   help="draw leads only once R of the answer bytes past distance 0 are right at a scoring")
    p.add_argument("--samples", type=int, default=256, help="held-out samples per score")
    p.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="runs/benchmarks/passkey_copy")
    p.add_argument("--smoke", action="store_true", help="a few steps of one seed per setting")
    args = p.parse_args()
    unknown = sorted(set(args.settings) - set(SETTINGS))
    if unknown:
        p.error(f"unknown setting(s) {unknown}; choose from {sorted(SETTINGS)}")
    if args.lead_when and not (args.lead and max(args.distances) > 0):
        p.error("--lead-when gates the leads of --lead by recall past distance 0: give --lead and a distance > 0")
    variants = dict(map(parse_variant, args.variant))
    args.overrides = {**{s: SETTINGS[s] for s in args.settings}, **variants}
    args.settings = [*args.settings, *variants]
    if args.smoke:
        args.seeds, args.steps, args.every, args.batch, args.samples = 1, 4, 2, 4, 32
        args.out = str(Path(args.out) / "smoke")
    summarize(run_points(args), args)


if __name__ == "__main__":
    main()
