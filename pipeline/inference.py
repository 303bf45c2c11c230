"""Decoding from an exported folder with PyTorch or onnxruntime behind one interface.

A decoder reads a prompt of any length segment by segment (whole segments through the
parallel forward, the rest into the step cache) and then takes one token per call: its
state is O(S + M) per layer whatever the prompt's length. ``generate_ids`` picks tokens
the same way for both backends, so their greedy output is the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np
import torch

from model import RMAT
from model.export_layout import CONFIG
from model.onnx_graphs import SEGMENT_FILE, STEP_FILE, memory_state_names, step_state_names
from model.pretrained import ExportedFolderError, config_from_dict, read_json_file, verify_folder
from model.rmat import sample
from model.tokenizer import ExportedTokenizer, load_exported

BACKENDS = ("torch", "onnx")


class Decoder(Protocol):
    """Reads a prompt, then continues it one token at a time; logits are float32 [B, V]."""

    def prefill(self, ids: np.ndarray) -> np.ndarray: ...

    def step(self, token: np.ndarray) -> np.ndarray: ...


class TorchDecoder:
    """``RMAT.prefill`` and ``RMAT.step`` on the exported weights."""

    def __init__(self, model: RMAT) -> None:
        self.model, self.cache = model.eval(), None

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        logits, self.cache = self.model.prefill(torch.from_numpy(ids.astype(np.int64)))
        return logits.float().numpy()

    def step(self, token: np.ndarray) -> np.ndarray:
        logits, self.cache = self.model.step(torch.from_numpy(token.astype(np.int64)), self.cache)
        return logits.float().numpy()


class OnnxDecoder:
    """segment.onnx for whole segments of the prompt, step.onnx for the rest and every new token.

    The memory and the cache live here, as numpy arrays passed in and taken back at each call.
    """

    def __init__(self, folder: str, threads: int = 1) -> None:
        import onnxruntime as ort

        self.cfg = config_from_dict(read_json_file(folder, CONFIG))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        sessions = []
        for name in (SEGMENT_FILE, STEP_FILE):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                raise ExportedFolderError(f"{path}: missing; export with --format safetensors,onnx")
            sessions.append(ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]))
        self.segment, self.stepper = sessions
        # A folder exported before the graphs carried the slots' keys and values (mem_kv) lacks that input.
        taken = {i.name for i in self.stepper.get_inputs()}
        self.step_state = [name for name in step_state_names(self.cfg) if name in taken]
        self.memory_state = [name for name in memory_state_names(self.cfg) if name in taken]
        self.state: dict[str, np.ndarray] = {}

    def reset(self, batch: int) -> None:
        """An empty memory and cache for ``batch`` rows."""
        c, memory = self.cfg, len(self.cfg.memory_layers)
        kv = (c.n_layers, batch, c.n_heads, c.segment_len, c.head_dim)
        self.state = {"mem": np.zeros((memory, batch, c.memory_slots, c.d_model), np.float32),
                      "valid": np.zeros((memory, batch, c.memory_slots), bool),
                      "carry": np.zeros((memory, batch, c.d_model), np.float32),
                      "k_cache": np.zeros(kv, np.float32), "v_cache": np.zeros(kv, np.float32),
                      "y_cache": np.zeros((c.n_layers, batch, c.segment_len, c.d_model), np.float32),
                      "pos": np.array(0, np.int64)}
        if c.token_shift:  # the embedding the next step's shift reads: zeros at a segment's start
            self.state["emb"] = np.zeros((batch, 1, c.d_model), np.float32)
        if "read_bias" in self.memory_state:  # what each read adds to a slot's logit: nothing to start
            self.state["read_bias"] = np.zeros((memory, batch, c.memory_slots), np.float32)
        if "mem_kv" in self.memory_state:  # empty slots project to zeros (RMSNorm and a bias-free projection)
            self.state["mem_kv"] = np.zeros((memory, batch, c.memory_slots, c.mem_kv_width), np.float32)

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        self.reset(ids.shape[0])
        return self.extend(ids)

    def extend(self, ids: np.ndarray) -> np.ndarray:
        """Read ids [B, T >= 1] on from the current state; returns the last logits [B, V].

        A whole segment that starts at a segment boundary (and is not the prompt's end) goes
        through segment.onnx, every other token through step.onnx.
        """
        s, i, logits = self.cfg.segment_len, 0, None
        while i < ids.shape[1]:
            if int(self.state["pos"]) == 0 and ids.shape[1] - i > s:
                self.run_segment(ids[:, i:i + s])
                i += s
            else:
                logits = self.step(ids[:, i])
                i += 1
        return logits

    def run_segment(self, tokens: np.ndarray) -> np.ndarray:
        """One segment through segment.onnx from the current memory; returns logits [B, T, V]."""
        st = self.state
        out = self.segment.run(None, {"tokens": tokens.astype(np.int64), **{n: st[n] for n in self.memory_state}})
        st.update(zip(self.memory_state, out[1:], strict=True))
        return out[0]

    def step(self, token: np.ndarray) -> np.ndarray:
        st = self.state
        feed = {name: st[name] for name in self.step_state}
        out = self.stepper.run(None, {"token": token.astype(np.int64), **feed})
        for name, value in zip(self.step_state, out[1:], strict=True):
            st[name] = value
        return out[0]


def open_decoder(folder: str, backend: str, threads: int = 1) -> Decoder:
    """The decoder of an exported folder for ``backend`` (its files' sha256s checked first)."""
    verify_folder(folder)
    if backend == "torch":
        return TorchDecoder(RMAT.from_pretrained(folder))
    if backend == "onnx":
        return OnnxDecoder(folder, threads)
    raise ValueError(f"--backend {backend}: choose from {BACKENDS}")


@dataclass
class Sampling:
    """How tokens are picked: temperature 0 is greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: Optional[int] = None
    seed: int = 0


def generate_ids(decoder: Decoder, prompt: list[int], sampling: Sampling, eos_id: Optional[int] = None
                 ) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new ids continuing ``prompt`` (one row); stops after EOS."""
    torch.manual_seed(sampling.seed)  # a sampled continuation is repeatable
    logits = decoder.prefill(np.asarray([prompt], dtype=np.int64))
    for i in range(sampling.max_new_tokens):
        token = int(sample(torch.from_numpy(logits), sampling.temperature, sampling.top_k)[0])
        yield token
        if token == eos_id or i + 1 == sampling.max_new_tokens:
            return
        logits = decoder.step(np.asarray([token], dtype=np.int64))


def prompt_ids(tokenizer: ExportedTokenizer, text: str) -> list[int]:
    """BOS, then the text's ids: a prompt starts a document, as every training document did."""
    return [tokenizer.bos_id, *tokenizer.encode(text)]


def stream_text(folder: str, text: str, sampling: Sampling, backend: str, write: Callable[[str], None]
                ) -> tuple[list[int], float]:
    """Continue ``text``, writing the new text as it is decoded; returns (new ids, tokens per second)."""
    tokenizer = load_exported(folder)
    decoder = open_decoder(folder, backend)
    ids, shown = [], ""
    start = time.perf_counter()
    for token in generate_ids(decoder, prompt_ids(tokenizer, text), sampling, tokenizer.eos_id):
        ids.append(token)
        text_now = tokenizer.decode(ids)
        # A multi-byte character shows once whole: print only what decodes cleanly so far.
        if not text_now.endswith("\ufffd"):
            write(text_now[len(shown):])
            shown = text_now
    seconds = time.perf_counter() - start
    return ids, len(ids) / max(seconds, 1e-9)
