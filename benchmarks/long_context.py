"""Recall across segments: multi-query associative recall (MQAR) with filler segments between.

Zoology's MQAR protocol stretched over segment boundaries. A sample is d + 2 segments:

    segment 0        n key-value pairs ("k v k v ..."), then filler
    segments 1..d    filler
    last segment     the n keys again in random order, among filler

Accuracy is taken at the answers (the value that belongs after each asked key), where the
loss is also taken, as in Zoology. Only what crosses segment boundaries can answer:
attention in RMAT never leaves a segment. As in Zoology, the answer is not shown after
its question: a shown answer rules itself out for the questions after it, and a model that
remembers which values appeared, but not which key had which, then scores H(n) / n (0.52
at n = 4) instead of about 1 / n. A language model's stream must show it (the pipeline's
version of this task, ``show_answers``); the ceiling printed beside follows either way.
Settings, same width and depth, parameter counts within 10%:

    rmat     RMAT with the chunk summaries the model's defaults held before (``CHUNK_SUMMARIES``,
             M = 40), and each ``--variant name:key=value,...`` of it
    default  the model's own defaults at this size: every token an entry in the first layer's
             memory (M = 360, 10 segments back), two heads of 16 reading it, the token shift
             (which every other setting then needs: ``--token-shift``)
    nomem    RMAT without the memory path (global + local only): must stay at chance
    xl       Transformer-XL: each layer also attends the previous segment's hidden states,
             cached without gradient
    full     one causal transformer over the whole sample: the upper bound

Every (setting, n, d, seed) point trains from scratch on fresh samples for ``--steps``
steps and is scored on 1,024 held-out samples. Points run in ``--jobs`` processes of one
thread each; results append to ``OUT/results.jsonl`` as they finish (a rerun skips the
points already there); each point's line gives its accuracy per question in the order
asked. Prints mean and spread over seeds per cell with the value-set ceiling (what a model
scores that knows which values appeared but not which key had which), and writes
``OUT/long_context.png``, a heat map of the means.

    python benchmarks/long_context.py --n 1,4,16 --d 1,2,4,8 --seeds 3 --steps 3000
    python benchmarks/long_context.py --n 4 --d 1 --token-shift --steps 6000 \
        --variant tok8:mem_tokens_per_chunk=8,mem_slots=360   # binding on CPU budgets
    python benchmarks/long_context.py --n 4,16 --d 1,2,4,8 --device cuda --jobs 8 --batch 256 --steps 25000
    python benchmarks/long_context.py --smoke          # CI: one small cell, seconds
    python benchmarks/long_context.py --n 4 --d 1,2,4 --token-shift --steps 6000 --report   # what is done so far

``--lead L`` puts L filler tokens before the pairs: where in its segment a fact sits changes how
fast the memory learns to carry it (docs/design.md, section 2).

``--token-warmup N`` makes the first N steps of every setting with token entries write every
token (``RMAT.write_every_token``), a curriculum before the choice narrows to its k tokens
(docs/design.md, section 2).

``--token-shift`` gives every setting ``RMATConfig.token_shift`` (each embedding plus a
projection of the previous token's): without it even the upper bound does not learn to
bind keys to values within CPU budgets (docs/design.md, section 2).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parse_variant, print_table, run_resumable  # noqa: E402

from model import RMAT, RMATConfig  # noqa: E402
from model.config import CHUNK_SUMMARIES  # noqa: E402
from model.layers import Rotary, SwiGLU, TokenShift  # noqa: E402

N_FILLER, N_KEYS, N_VALUES = 64, 64, 64
VOCAB = N_FILLER + N_KEYS + N_VALUES  # filler 0..63, keys 64..127, values 128..191
IGNORE = -100


# ---- the task ----------------------------------------------------------------------------

@dataclass
class Task:
    n_pairs: int
    distance: int  # filler segments between the pairs and the questions
    segment_len: int
    lead: int = 0  # filler tokens before the pairs (a document's first is where the loader puts BOS)
    show_answers: bool = False  # each question followed by its answer, as a language model's stream holds it

    @property
    def n_segments(self) -> int:
        return self.distance + 2

    def sample(self, batch: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """tokens [B, N] and targets [B, N] (IGNORE except at the answers)."""
        s, n = self.segment_len, self.n_pairs
        if self.lead + 2 * n > s:
            raise ValueError(f"{n} pairs after {self.lead} filler tokens do not fit a segment of {s} tokens")
        tokens = torch.randint(0, N_FILLER, (batch, self.n_segments * s), generator=gen)
        targets = torch.full_like(tokens, IGNORE)
        rows = torch.arange(batch)[:, None]
        keys = torch.argsort(torch.rand(batch, N_KEYS, generator=gen), dim=1)[:, :n] + N_FILLER
        values = torch.randint(0, N_VALUES, (batch, n), generator=gen) + N_FILLER + N_KEYS
        tokens[:, self.lead:self.lead + 2 * n:2], tokens[:, self.lead + 1:self.lead + 2 * n:2] = keys, values
        # Questions: the keys in a random order at random even slots of the last segment.
        order = torch.argsort(torch.rand(batch, n, generator=gen), dim=1)
        slots = torch.sort(torch.argsort(torch.rand(batch, s // 2, generator=gen), dim=1)[:, :n],
                           dim=1).values
        at = (self.n_segments - 1) * s + 2 * slots
        tokens[rows, at] = keys.gather(1, order)
        if self.show_answers:
            tokens[rows, at + 1] = values.gather(1, order)
        targets[rows, at] = values.gather(1, order)  # predicted at the key: its value belongs next
        return tokens, targets


def value_set_ceiling(targets: Tensor, show_answers: bool) -> float:
    """Accuracy of a model that knows which values appeared but not which key had which: it
    answers the most frequent value not yet ruled out. A shown answer rules itself out for
    the questions after it."""
    total = 0.0
    for t in targets:
        answers = t[t != IGNORE].tolist()
        left = Counter(answers)
        for a in answers:
            total += max(left.values()) / left.total() / len(answers)
            if show_answers:
                left[a] -= 1
                if not left[a]:
                    del left[a]
    return total / len(targets)


# ---- the baselines that are not RMAT configs ----------------------------------------------

class XLBlock(nn.Module):
    """Pre-norm block whose attention also sees the previous segment's normed hidden states,
    cached without gradient (Transformer-XL), with rotary positions over both segments."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, segment_len: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.attn_norm = nn.RMSNorm(d_model)
        self.wqkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)
        self.rotary = Rotary(d_model // n_heads, 2 * segment_len, 10000.0)
        self.ffn_norm = nn.RMSNorm(d_model)
        self.ffn = SwiGLU(d_model, d_ff, 0.0)

    def forward(self, x: Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor]:
        u = self.attn_norm(x)
        t = u.shape[1]
        both = u if cache is None else torch.cat([cache, u], dim=1)
        past = both.shape[1] - t
        q, k, v = (self._heads(p) for p in self.wqkv(both).chunk(3, -1))
        q, k = self.rotary(q[:, :, past:], past), self.rotary(k, 0)
        mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.wo(o.transpose(1, 2).flatten(2))
        return x + self.ffn(self.ffn_norm(x)), u.detach()

    def _heads(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)


class TransformerXL(nn.Module):
    def __init__(self, cfg: RMATConfig, d_ff: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.shift = TokenShift(cfg.d_model) if cfg.token_shift else None  # inside the segment, as RMAT's
        self.blocks = nn.ModuleList(XLBlock(cfg.d_model, cfg.n_heads, d_ff, cfg.segment_len)
                                    for _ in range(cfg.n_layers))
        self.norm_f = nn.RMSNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=cfg.init_std)

    def init_state(self, batch_size: int) -> list[Tensor | None]:
        return [None] * len(self.blocks)

    def forward(self, tokens: Tensor, caches: list[Tensor | None]) -> tuple[Tensor, list[Tensor]]:
        x = self.tok_emb(tokens)
        x = x if self.shift is None else self.shift(x)
        new = []
        for block, cache in zip(self.blocks, caches, strict=True):
            x, c = block(x, cache)
            new.append(c)
        return self.lm_head(self.norm_f(x)), new


# ---- settings ----------------------------------------------------------------------------

# The tiny model; 40 slots of one entry per 8-token chunk reach back 10 segments.
SHAPE = dict(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=4, segment_len=32, chunk_len=8)
# The `rmat` setting and its variants: the recorded numbers were measured on the summaries.
TINY = {**SHAPE, **CHUNK_SUMMARIES, "mem_slots": 40}
# AdamW's beta2 for every point, and for `rmat train` in long_context_pipeline.py: the pipeline's default,
# 0.95 (as LLM pretraining takes it), delays binding (docs/design.md, section 2).
BETA2 = 0.98


@dataclass
class Setting:
    name: str
    overrides: dict = field(default_factory=dict)


def build(setting: Setting, task: Task, target_params: int | None, token_shift: bool = False) -> nn.Module:
    """The model of a setting; baselines get the FFN width that brings them nearest to
    ``target_params`` (the RMAT's count). ``token_shift`` goes to every setting alike."""
    base = {**SHAPE, "token_shift": token_shift}
    if setting.name == "xl":
        return _matched(lambda f: TransformerXL(RMATConfig(**base, paths=["global"], mem_slots=0), f), target_params)
    if setting.name == "full":
        n = task.n_segments * task.segment_len
        return _matched(lambda f: RMAT(RMATConfig(**{**base, "segment_len": n, "chunk_len": n},
                                                  paths=["global"], mem_slots=0, d_ff=f)), target_params)
    if setting.name == "nomem":
        return _matched(lambda f: RMAT(RMATConfig(**base, paths=["global", "local"], mem_slots=0, d_ff=f)),
                        target_params)
    return RMAT(rmat_config(setting, token_shift))


def _matched(make, target: int | None) -> nn.Module:
    if target is None:
        return make(None)
    lo, hi = 1, 256  # FFN widths in steps of 8; the count grows with the width
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count_params(make(8 * mid)) < target else (lo, mid)
    best = min((8 * max(lo - 1, 1), 8 * lo), key=lambda f: abs(count_params(make(f)) - target))
    return make(best)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def rmat_config(setting: Setting, token_shift: bool = False) -> RMATConfig:
    """An RMAT setting's model: ``default`` is the model's own defaults at the tiny shape, the others
    build on the chunk summaries (``TINY``) with ``token_shift``; the setting's overrides on top."""
    if setting.name == "default":
        return RMATConfig(**{**SHAPE, **setting.overrides})
    return RMATConfig(**{**TINY, "token_shift": token_shift, **setting.overrides})


def rmat_params(setting: Setting, token_shift: bool = False) -> int:
    return count_params(RMAT(rmat_config(setting, token_shift)))


# ---- training and scoring ----------------------------------------------------------------

def answer_logits(model: nn.Module, tokens: Tensor, segment_len: int, window: int) -> Tensor:
    """Logits [B, N, V] of the whole sample, fed segment by segment with the state carried;
    the state is detached every ``window`` segments (0: never)."""
    if isinstance(model, RMAT) and model.cfg.segment_len > segment_len:  # the full-attention upper bound
        return model(tokens, model.init_state(tokens.shape[0]))[0]
    state = model.init_state(tokens.shape[0])
    outs = []
    for i in range(0, tokens.shape[1], segment_len):
        if window and i and (i // segment_len) % window == 0:
            state = state.detach() if hasattr(state, "detach") else state
        logits, state = model(tokens[:, i:i + segment_len], state)
        outs.append(logits)
    return torch.cat(outs, dim=1)


def train_point(args: dict) -> dict:
    """Train one (setting, task, seed) point from scratch; returns its record."""
    torch.set_num_threads(1)
    setting, task, seed = Setting(**args["setting"]), Task(**args["task"]), args["seed"]
    torch.manual_seed(seed)
    device = torch.device(args.get("device", "cpu"))
    model = build(setting, task, args["target_params"], args.get("token_shift", False)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args["lr"], weight_decay=0.1, betas=(0.9, BETA2))
    steps, warmup = args["steps"], max(1, args["steps"] // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / steps))))
    gen = torch.Generator().manual_seed(1_000 + seed)
    start = time.perf_counter()
    model.train()
    token_warmup = args.get("token_warmup", 0) if has_token_entries(model) else 0
    for step in range(1, steps + 1):
        if token_warmup:
            model.write_every_token(step <= token_warmup)
        train_task = task if args["train_d"] < 0 else \
            replace(task, distance=training_distance(step, args["train_d"], args.get("train_d_ramp", 0), gen))
        tokens, targets = (t.to(device) for t in train_task.sample(args["batch"], gen))
        logits = answer_logits(model, tokens, task.segment_len, args["window"])
        if args.get("loss") == "all":  # every next token, as a language model's training takes it
            targets = torch.cat([tokens[:, 1:], torch.full_like(tokens[:, :1], IGNORE)], dim=1)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % max(1, steps // 10) == 0:
            print(f"    {setting.name} n={task.n_pairs} d={task.distance} seed={seed} step {step}/{steps} "
                  f"loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    tokens, targets = (t.to(device) for t in task.sample(1024, torch.Generator().manual_seed(10_000 + seed)))
    with torch.no_grad():
        hits = answer_logits(model, tokens, task.segment_len, 0).argmax(-1)[targets != IGNORE] == \
            targets[targets != IGNORE]
    # Row-major: each sample's n answers in the order asked. A model that rules out shown answers
    # instead of binding scores 1/n, 1/(n-1), ..., 1 along them.
    by_question = hits.view(len(tokens), task.n_pairs).float().mean(0)
    return {**args, "accuracy": float(hits.float().mean()),
            "ceiling": value_set_ceiling(targets.cpu(), task.show_answers),
            "by_question": [round(float(a), 3) for a in by_question],
            "params": count_params(model), "seconds": round(seconds, 1)}


def training_distance(step: int, train_d: int, ramp: int, gen: torch.Generator) -> int:
    """A training batch's distance, drawn from 0..train_d; with a ``ramp``, the farthest drawn
    grows from 1 at the first step to ``train_d`` at step ``ramp`` (short distances first)."""
    farthest = train_d if ramp <= 0 else min(train_d, 1 + (train_d - 1) * step // ramp)
    return int(torch.randint(0, farthest + 1, (), generator=gen))


def has_token_entries(model: nn.Module) -> bool:
    return isinstance(model, RMAT) and model.cfg.has_memory and model.cfg.token_entries > 0


# ---- the grid -----------------------------------------------------------------------------

def parse_settings(names: str, variants: list[str]) -> list[Setting]:
    settings = [Setting(n) for n in names.split(",") if n]
    for v in variants:
        settings.append(Setting(*parse_variant(v)))
    return settings


def point_key(r: dict) -> tuple:
    return (r["setting"]["name"], r["task"]["n_pairs"], r["task"]["distance"], r["seed"], r["steps"], r["window"],
            r["train_d"], r.get("loss", "answers"), r["task"].get("show_answers", True),  # shown before it was a choice
            r["task"].get("lead", 0),
            r.get("token_shift", False), r.get("token_warmup", 0), r.get("train_d_ramp", 0))


def check_params_match(settings: list[Setting], target: int, task: Task, token_shift: bool) -> None:
    """Every setting within 10% of the RMAT reference's parameter count, or an error naming it."""
    for s in settings:
        n = count_params(build(s, task, target, token_shift))
        if abs(n - target) > 0.1 * target:
            raise SystemExit(f"long_context: setting {s.name!r} has {n:,} parameters, more than 10% from "
                             f"the RMAT reference's {target:,}; compare settings of one size")


def run_grid(args: argparse.Namespace) -> list[dict]:
    settings = parse_settings(args.settings, args.variant)
    rmat_reference = next((s for s in settings if s.name not in ("xl", "full", "nomem")), Setting("rmat"))
    target = rmat_params(rmat_reference, args.token_shift)
    points = [dict(setting=vars(s), task=vars(Task(n, d, TINY["segment_len"], args.lead, args.show_answers)),
                   seed=seed, steps=args.steps, window=args.window, train_d=args.train_d, batch=args.batch,
                   lr=args.lr, target_params=target, loss=args.loss, device=args.device, token_shift=args.token_shift,
                   token_warmup=args.token_warmup, train_d_ramp=args.train_d_ramp)
              for n in args.n for d in args.d for s in settings
              for seed in range(args.first_seed, args.first_seed + args.seeds)]
    check_params_match(settings, target, Task(args.n[0], args.d[0], TINY["segment_len"]), args.token_shift)
    if any(s.name == "default" for s in settings) and not args.token_shift:
        raise SystemExit("long_context: the setting 'default' has the token shift; give every setting it "
                         "(--token-shift), or the comparison measures the shift, not the memory")
    return run_resumable(points, point_key, train_point, Path(args.out) / "results.jsonl", args.jobs, report,
                         train_missing=not args.report)


def report(r: dict) -> None:
    asked = " / ".join(f"{a:.2f}" for a in r.get("by_question", []))
    print(f"  {r['setting']['name']:>10} n={r['task']['n_pairs']:<2} d={r['task']['distance']} "
          f"seed={r['seed']}  acc {r['accuracy']:.3f}  ({r['seconds']:.0f} s)"
          + (f"  by question asked: {asked}" if r["task"]["n_pairs"] > 1 and asked else ""), flush=True)


def summarize(records: list[dict], args: argparse.Namespace) -> None:
    cells = [(n, d) for n in args.n for d in args.d]
    names = [s.name for s in parse_settings(args.settings, args.variant)]
    table: dict[tuple, list[float]] = {}
    ceiling: dict[tuple, list[float]] = {}  # each seed scores its own held-out samples
    params = {}
    for r in records:
        cell = (r["task"]["n_pairs"], r["task"]["distance"])
        table.setdefault((r["setting"]["name"], cell), []).append(r["accuracy"])
        ceiling.setdefault(cell, []).append(r["ceiling"])
        params[r["setting"]["name"]] = r["params"]
    headers = ["setting", "params", *(f"n={n} d={d}" for n, d in cells)]
    rows = [[name, f"{params[name]:,}" if name in params else "-",
             *(_mean_spread(table.get((name, c), [])) for c in cells)] for name in names]
    rows.append(["value-set ceiling", "", *(f"{sum(ceiling[c]) / len(ceiling[c]):.3f}" if c in ceiling else "-"
                                            for c in cells)])
    print(f"\nMQAR accuracy across segments, mean (min-max) over up to {args.seeds} seeds, {args.steps} steps, "
          f"batch {args.batch}, chance {1 / N_VALUES:.3f}, answers {'shown' if args.show_answers else 'hidden'}"
          f"{', token shift' if args.token_shift else ''}"
          f"{f', every token written for {args.token_warmup} steps' if args.token_warmup else ''}"
          f"{distances_label(args.train_d, args.train_d_ramp)}"
          f"{f', pairs after {args.lead} filler tokens' if args.lead else ''}\n")
    print_table(headers, rows)
    heat_map(names, cells, table, Path(args.out) / "long_context.png")


def distances_label(train_d: int, ramp: int) -> str:
    if train_d < 0:
        return ""
    return f", trained on distances 0-{train_d}" + (f" (the farthest from 1 up over {ramp} steps)" if ramp else "")


def _mean_spread(xs: list[float]) -> str:
    """Mean (min-max) over seeds, and how many seeds when there is more than one."""
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.3f} (1 seed)"
    return f"{sum(xs) / len(xs):.3f} ({min(xs):.2f}-{max(xs):.2f}, {len(xs)} seeds)"


def heat_map(names: list[str], cells: list[tuple], table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [[sum(table.get((n, c), [float("nan")])) / max(1, len(table.get((n, c), []))) for c in cells]
            for n in names]
    fig, ax = plt.subplots(figsize=(1.1 * len(cells) + 2, 0.6 * len(names) + 1.5))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cells)), [f"n={n}\nd={d}" for n, d in cells])
    ax.set_yticks(range(len(names)), names)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, "-" if math.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="w" if v < 0.6 else "k", fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title("MQAR across segments (n pairs, d filler segments)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nheat map: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    p.add_argument("--d", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    p.add_argument("--settings", default="rmat,nomem,xl,full")
    p.add_argument("--variant", action="append", default=[], help="name:key=value,... RMAT config overrides")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds FIRST_SEED .. FIRST_SEED + SEEDS - 1: more seeds for a cell measured before")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--window", type=int, default=0, help="detach the state every k segments (0: full backprop)")
    p.add_argument("--train-d", type=int, default=-1,
                   help="train on distances drawn from 0..K each step, score on the cell's (-1: the cell's)")
    p.add_argument("--train-d-ramp", type=int, default=0,
                   help="with --train-d K: the farthest distance drawn grows from 1 to K over the first N steps")
    p.add_argument("--loss", choices=["answers", "all"], default="answers",
                   help="train on the loss at the answers (Zoology) or at every next token (a language model)")
    p.add_argument("--show-answers", action="store_true",
                   help="each question followed by its answer, as text shows it (the form before Zoology's)")
    p.add_argument("--lead", type=int, default=0,
                   help="filler tokens before the pairs in the first segment (0: the pairs open it)")
    p.add_argument("--token-shift", action="store_true",
                   help="every setting's embeddings also carry the previous token's (RMATConfig.token_shift)")
    p.add_argument("--token-warmup", type=int, default=0,
                   help="steps at the start in which settings with token entries write every token")
    p.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda (the jobs share it)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="runs/benchmarks/long_context")
    p.add_argument("--report", action="store_true",
                   help="print the table and heat map of the points already in OUT/results.jsonl; train none")
    p.add_argument("--smoke", action="store_true", help="one small cell, two settings, one seed")
    args = p.parse_args()
    if args.smoke:
        args.n, args.d, args.settings, args.seeds, args.steps = [2], [1], "rmat,nomem", 1, 30
        args.out = str(Path(args.out) / "smoke")
    summarize(run_grid(args), args)


if __name__ == "__main__":
    main()
