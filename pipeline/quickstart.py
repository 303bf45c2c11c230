"""The laptop quickstart: a short real training of RMAT on bytes of real text.

It reads source files (by default the Python standard library, present on every
machine that runs rmat), trains with TBPTT over rows of documents, reports validation
loss, saves the weights as safetensors and prints a sample.
"""

from __future__ import annotations

import glob
import math
import os
import sysconfig
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from model import RMAT, RMATConfig
from pipeline.config import to_yaml
from pipeline.streams import BatchStream, RowStream, split_rows
from pipeline.tbptt import window_loss

BYTE_VOCAB = 256
BOS_ID, EOS_ID = 256, 257


@dataclass
class QuickstartData:
    files: list[str] = field(default_factory=list)  # globs; empty: the Python standard library
    max_files: int = 300
    max_file_bytes: int = 32_000
    val_docs: int = 16


@dataclass
class QuickstartTrain:
    steps: int = 300
    batch_size: int = 8
    tbptt_segments: int = 2
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    out_dir: str = "runs/quickstart"


@dataclass
class QuickstartConfig:
    model: RMATConfig = field(default_factory=lambda: RMATConfig(
        vocab_size=BYTE_VOCAB + 2, d_model=128, n_layers=2, n_heads=4,
        segment_len=128, chunk_len=32, mem_slots=8))
    data: QuickstartData = field(default_factory=QuickstartData)
    train: QuickstartTrain = field(default_factory=QuickstartTrain)


def stdlib_sources() -> list[str]:
    """The standard library's own modules: real code, on disk wherever Python is."""
    root = sysconfig.get_path("stdlib")
    skip = (os.sep + "site-packages" + os.sep, os.sep + "test" + os.sep, os.sep + "tests" + os.sep)
    return sorted(p for p in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
                  if not any(s in p for s in skip))


def read_byte_documents(cfg: QuickstartData) -> list[np.ndarray]:
    """Each file's bytes as one document (token id = byte value)."""
    paths = sorted({p for pattern in cfg.files for p in glob.glob(pattern, recursive=True)}) \
        if cfg.files else stdlib_sources()
    if not paths:
        raise FileNotFoundError(f"data.files={cfg.files} matched no file; give globs of text files")
    docs = []
    for path in paths[:cfg.max_files]:
        with open(path, "rb") as f:
            data = f.read(cfg.max_file_bytes)
        if data:
            docs.append(np.frombuffer(data, dtype=np.uint8).astype(np.int64))
    return docs


def lr_at(step: int, cfg: QuickstartTrain) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@torch.no_grad()
def evaluate(model: RMAT, docs: list[np.ndarray], cfg: QuickstartConfig) -> float:
    """Mean loss per token over whole documents, each from an empty memory."""
    model.eval()
    segs_per_doc = [math.ceil((len(d) + 1) / cfg.model.segment_len) for d in docs]
    stream = BatchStream([RowStream(docs, [i], cfg.model.segment_len, BOS_ID, EOS_ID) for i in range(len(docs))])
    state = model.init_state(len(docs))
    total, count = 0.0, 0
    for step in range(max(segs_per_doc)):
        seg = stream.next_segment()
        live = torch.tensor([step < n for n in segs_per_doc])
        seg.targets[~live] = -100  # a finished row wraps around; do not count it twice
        loss, state, n = window_loss(model, [seg], state)
        total, count = total + loss.item() * n, count + n
    model.train()
    return total / max(count, 1)


def run_quickstart(cfg: QuickstartConfig) -> dict[str, float]:
    """Train, evaluate, save; returns the first and last training losses and the val loss."""
    torch.manual_seed(cfg.train.seed)
    docs = read_byte_documents(cfg.data)
    val_docs, train_docs = docs[:cfg.data.val_docs], docs[cfg.data.val_docs:]
    rows = split_rows(len(train_docs), cfg.train.batch_size, cfg.train.seed)
    stream = BatchStream([RowStream(train_docs, r, cfg.model.segment_len, BOS_ID, EOS_ID) for r in rows])
    model = RMAT(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                            betas=(0.9, 0.95))
    print(f"rmat quickstart: {model.num_params() / 1e6:.2f} M parameters, {len(train_docs)} train / "
          f"{len(val_docs)} val documents, {sum(map(len, docs)) / 1e6:.1f} M bytes")
    val_before = evaluate(model, val_docs, cfg)
    state = model.init_state(cfg.train.batch_size)
    losses, tokens, start = [], 0, time.perf_counter()
    bar = tqdm(range(cfg.train.steps), desc="train", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.train)
        segments = [stream.next_segment() for _ in range(cfg.train.tbptt_segments)]
        loss, state, n = window_loss(model, segments, state)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        state = state.detach()
        losses.append(loss.item())
        tokens += n
        bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{tokens / (time.perf_counter() - start):.0f}")
    val_after = evaluate(model, val_docs, cfg)
    out = save_run(model, cfg)
    prompt = torch.from_numpy(val_docs[0][:64].copy())
    sample = model.eval().generate(prompt, 120, temperature=0.8, top_k=20)
    print(f"val loss {val_before:.3f} -> {val_after:.3f} nats/byte; weights in {out}")
    print("sample:\n" + bytes(sample.clamp(max=255).tolist()).decode("utf-8", errors="replace"))
    return {"first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:])),
            "val_before": val_before, "val_after": val_after}


def save_run(model: RMAT, cfg: QuickstartConfig) -> str:
    """Weights (safetensors) and the config that made them, each written atomically."""
    os.makedirs(cfg.train.out_dir, exist_ok=True)
    weights = os.path.join(cfg.train.out_dir, "model.safetensors")
    # Tied weights share storage; safetensors wants each stored once.
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"
               or not cfg.model.tie_embeddings}
    save_file(tensors, weights + ".tmp")
    os.replace(weights + ".tmp", weights)
    config_path = os.path.join(cfg.train.out_dir, "config.yaml")
    with open(config_path + ".tmp", "w") as f:
        f.write(to_yaml(cfg))
    os.replace(config_path + ".tmp", config_path)
    return weights
