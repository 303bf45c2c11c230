"""Rows of documents cut into segments: what a training step feeds the recurrent model.

Each row reads one contiguous stream of documents. A document always starts at a
segment boundary, so ``reset`` (empty the row's memory) falls before its first segment
and training sees documents the way evaluation does: from an empty memory. The tail of
a document's last segment is padding that the loss ignores, and so is every target
outside a document's loss spans when it has them (data_prep.shards.loss_spans).

Read in TBPTT windows, a row may also keep a short document whole: one that fits in a
window but not in what is left of the current one waits for the next window, the row
idling on padding segments until then. Otherwise a document of two segments starting on
a window's last segment would have its first segment's memory detached before its second
reads it: half of such documents would teach the memory's write nothing. A row may also
align documents' ends with windows' ends, so that whatever a document's last segment
asks (a passkey's question, an answer) gets its gradient into the writes of the window's
earlier segments, however long the document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = -100


@dataclass
class Segment:
    """One segment of every row: inputs and targets [B, S], reset [B]."""

    inputs: Tensor
    targets: Tensor
    reset: Tensor


Spans = np.ndarray | None  # a document's loss spans, int64 [k, 2] (start, end); None: every target


class RowStream:
    """One row: documents ``docs[order[i]]`` read in turn, cycling forever.

    Each document is [bos] + ids + [eos]; position i predicts position i + 1, counted in
    the loss unless the document's ``spans`` leave it out. The position (document index,
    offset) is the whole state: ``state_dict`` restores it.
    """

    def __init__(self, docs: Sequence[np.ndarray], order: Sequence[int], segment_len: int,
                 bos_id: int, eos_id: int, spans: Sequence[Spans] | None = None) -> None:
        if len(order) == 0:
            raise ValueError("a row stream needs at least one document")
        self.docs, self.order, self.segment_len = docs, list(order), segment_len
        self.spans = spans
        self.bos_id, self.eos_id = bos_id, eos_id
        self.doc_index, self.offset = 0, 0

    def next_segment(self, room: int = 0, window: int = 0,
                     align_ends: bool = False) -> tuple[np.ndarray, np.ndarray, bool]:
        """(inputs [S], targets [S], reset) for the next segment of this row.

        Read in windows of ``window`` segments with ``room`` segments left in the current one
        (this one included), a document that fits in a window but not in the room left is not
        begun: the row gets a padding segment instead (no loss, no reset) and stays where it is.
        With ``align_ends`` a longer document is not begun either unless its last segment will
        be a window's last.
        """
        i = self.order[self.doc_index % len(self.order)]
        start = self.offset
        if start == 0 and not may_begin(segments_of(self.docs[i], self.segment_len), room, window, align_ends):
            return (np.full(self.segment_len, self.eos_id, dtype=np.int64),
                    np.full(self.segment_len, IGNORE_INDEX, dtype=np.int64), False)
        inputs, targets, last = segment_window(self.docs[i], start, self.segment_len, self.bos_id, self.eos_id,
                                               None if self.spans is None else self.spans[i])
        if last:
            self.doc_index, self.offset = self.doc_index + 1, 0
        else:
            self.offset = start + self.segment_len
        return inputs, targets, start == 0

    def state_dict(self) -> dict[str, int]:
        return {"doc_index": self.doc_index, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.doc_index, self.offset = int(state["doc_index"]), int(state["offset"])


def may_begin(segments: int, room: int, window: int, align_ends: bool) -> bool:
    """Whether a document of ``segments`` segments may begin with ``room`` segments left in a window of
    ``window`` (0: no windows): one that fits in a window only where it fits whole; with ``align_ends`` a
    longer one only where its last segment is a window's last, so its final ``window`` segments share one."""
    if segments <= window:
        return segments <= room
    return not (align_ends and window) or (room - segments) % window == 0


def segments_of(doc: np.ndarray, segment_len: int) -> int:
    """Segments that [bos] + doc + [eos] fills: one per ``segment_len`` predicted tokens."""
    return -(-(len(doc) + 1) // segment_len)


def segment_window(doc: np.ndarray, start: int, segment_len: int, bos_id: int, eos_id: int,
                   spans: Spans = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Inputs and targets [S] of the segment of [bos] + doc + [eos] that begins at token ``start``.

    Past the document's end, inputs are eos and targets IGNORE_INDEX; so are targets outside
    ``spans`` when given. The third value says whether this is the document's last segment.
    Only the window is copied: copying the whole document per segment would make a long
    document cost O(N^2 / S).
    """
    n = len(doc) + 2
    end = min(start + segment_len + 1, n)
    piece = np.asarray(doc[max(start - 1, 0):end - 1], dtype=np.int64)
    if start == 0:
        piece = np.concatenate([[bos_id], piece])
    if end == n:
        piece = np.concatenate([piece, [eos_id]])
    inputs = np.full(segment_len, eos_id, dtype=np.int64)
    targets = np.full(segment_len, IGNORE_INDEX, dtype=np.int64)
    inputs[:len(piece) - 1] = piece[:-1]
    targets[:len(piece) - 1] = piece[1:]
    if spans is not None:
        counted = np.zeros(segment_len, dtype=bool)
        near = spans[(spans[:, 1] > start) & (spans[:, 0] < start + segment_len)]
        for lo, hi in np.clip(near - start, 0, segment_len):
            counted[lo:hi] = True
        targets[~counted] = IGNORE_INDEX
    return inputs, targets, end == n


class BatchStream:
    """B row streams stepped together."""

    def __init__(self, rows: Sequence[RowStream]) -> None:
        self.rows = list(rows)

    def next_segment(self, room: int = 0, window: int = 0, align_ends: bool = False) -> Segment:
        """The rows' next segments; ``room``, ``window`` and ``align_ends`` as in ``RowStream.next_segment``."""
        parts = [row.next_segment(room, window, align_ends) for row in self.rows]
        return Segment(
            inputs=torch.from_numpy(np.stack([p[0] for p in parts])),
            targets=torch.from_numpy(np.stack([p[1] for p in parts])),
            reset=torch.tensor([p[2] for p in parts], dtype=torch.bool),
        )

    def state_dict(self) -> list[dict[str, int]]:
        return [row.state_dict() for row in self.rows]

    def load_state_dict(self, state: list[dict[str, int]]) -> None:
        if len(state) != len(self.rows):
            raise ValueError(f"saved stream has {len(state)} rows; this run has {len(self.rows)}")
        for row, s in zip(self.rows, state, strict=True):
            row.load_state_dict(s)

