"""Small models and inputs shared by the model tests."""

import torch

from model import RMAT, RMATConfig


def tiny_config(**overrides) -> RMATConfig:
    base = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=4, segment_len=16, chunk_len=4)
    base.update(overrides)
    return RMATConfig(**base)


def tiny_model(dtype=torch.float64, **overrides) -> RMAT:
    """A small RMAT whose mix weights and memory reads are not at their symmetric init,
    so that every path visibly contributes to the logits."""
    model = RMAT(tiny_config(**overrides)).to(dtype).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.mix_logits.normal_()
    return model


def run_segments(model: RMAT, tokens: torch.Tensor, state=None):
    """Feed tokens [B, N] as consecutive segments; returns logits [B, N, V] and the last state."""
    s = model.cfg.segment_len
    state = model.init_state(tokens.shape[0]) if state is None else state
    outs = []
    for i in range(0, tokens.shape[1], s):
        logits, state = model(tokens[:, i:i + s], state)
        outs.append(logits)
    return torch.cat(outs, dim=1), state
