"""A TBPTT window with its segments recomputed in the backward trains exactly as one that keeps them."""

from __future__ import annotations

import torch

from model import RMAT, RMATConfig
from pipeline.streams import Segment
from pipeline.tbptt import CarriedMemory, window_loss

CFG = RMATConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, segment_len=16, chunk_len=4)


def window(segments: int, rows: int = 2) -> list[Segment]:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, CFG.vocab_size, (rows, segments * CFG.segment_len + 1), generator=g)
    s = CFG.segment_len
    out = []
    for i in range(segments):
        targets = tokens[:, i * s + 1:(i + 1) * s + 1].clone()
        targets[0, :3] = -100  # positions the loss ignores
        reset = torch.tensor([i == 2] + [False] * (rows - 1))  # a new document starts in row 0
        out.append(Segment(inputs=tokens[:, i * s:(i + 1) * s], targets=targets, reset=reset))
    return out


def loss_and_grads(recompute: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = RMAT(CFG).train()
    loss, state, _ = window_loss(model, window(4), model.init_state(2), recompute=recompute)
    loss.backward()
    return loss.detach(), state.mem.detach(), {n: p.grad for n, p in model.named_parameters()}


def test_recomputed_segments_give_the_same_loss_memory_and_gradients_bit_for_bit():
    loss, mem, grads = loss_and_grads(recompute=False)
    loss_r, mem_r, grads_r = loss_and_grads(recompute=True)
    assert torch.equal(loss, loss_r) and torch.equal(mem, mem_r)
    assert grads.keys() == grads_r.keys()
    assert all(torch.equal(grads[n], grads_r[n]) for n in grads)
    assert all(g.abs().sum() > 0 for g in grads.values())


def test_recomputed_segments_leave_no_activation_of_theirs_held_for_the_backward():
    """What the autograd graph holds outside the segments' recomputation: without it, every
    segment's activations (growing with the window); with it, none."""

    def held_bytes(recompute: bool, segments: int) -> int:
        torch.manual_seed(0)
        model = RMAT(CFG).train()
        held = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            held.append(t.untyped_storage().nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            window_loss(model, window(segments), model.init_state(2), recompute=recompute)
        return sum(held)

    kept = [held_bytes(False, k) for k in (2, 4)]
    assert kept[1] > 1.8 * kept[0] > 0
    assert held_bytes(True, 2) == held_bytes(True, 4) == 0


def test_the_carried_memory_holds_a_layer_for_each_layer_that_holds_a_memory():
    cfg = RMATConfig(**{**vars(CFG), "mem_layers": [1], "mem_slots": 20})  # a segment's 4 summaries and 16 tokens
    carried = CarriedMemory(cfg, groups=2, rows=2, device=torch.device("cpu"), dtype=torch.float32)
    assert [s.mem.shape[0] for s in carried.states] == [1, 1]
    _, state, _ = window_loss(RMAT(cfg), window(2), carried.states[0], recompute=True)
    assert state.mem.shape == carried.states[0].mem.shape and state.valid.all()
