"""Rows of documents cut into segments that start at document boundaries."""

import numpy as np
import torch

from pipeline.streams import IGNORE_INDEX, BatchStream, RowStream

BOS, EOS = 100, 101


def row(docs, order=None, s=4):
    return RowStream(docs, order if order is not None else range(len(docs)), s, BOS, EOS)


def test_a_document_is_bos_ids_eos_with_next_token_targets():
    r = row([np.array([1, 2, 3])])
    inputs, targets, reset = r.next_segment()
    assert inputs.tolist() == [BOS, 1, 2, 3] and targets.tolist() == [1, 2, 3, EOS] and reset


def test_a_long_document_continues_without_reset_and_pads_its_tail():
    r = row([np.arange(6), np.array([7])])
    first, second, third = r.next_segment(), r.next_segment(), r.next_segment()
    assert first[0].tolist() == [BOS, 0, 1, 2] and first[2]
    assert second[0].tolist() == [3, 4, 5, EOS] and second[1].tolist() == [4, 5, EOS, IGNORE_INDEX]
    assert not second[2]
    assert third[0].tolist()[:2] == [BOS, 7] and third[2]  # the next document starts a segment


def test_row_position_saves_and_restores_exactly():
    docs = [np.arange(i + 5) for i in range(7)]
    a = row(docs)
    for _ in range(5):
        a.next_segment()
    b = row(docs)
    b.load_state_dict(a.state_dict())
    for _ in range(6):
        x, y = a.next_segment(), b.next_segment()
        assert all(np.array_equal(p, q) for p, q in zip(x[:2], y[:2], strict=True)) and x[2] == y[2]


def test_batch_stream_stacks_rows_and_their_resets():
    docs = [np.arange(2), np.arange(9)]
    stream = BatchStream([row(docs, [0]), row(docs, [1])])
    seg = stream.next_segment()
    assert seg.inputs.shape == (2, 4) and seg.inputs.dtype == torch.int64
    assert seg.reset.tolist() == [True, True]
    assert stream.next_segment().reset.tolist() == [True, False]



def test_loss_spans_leave_every_other_target_out_across_segments():
    spans = np.array([[1, 2], [3, 6]])  # predict ids 1, 3, 4 and the EOS of a 5-id document
    r = RowStream([np.arange(5)], [0], 4, BOS, EOS, [spans])
    (_, first, _), (_, second, _) = r.next_segment(), r.next_segment()
    assert first.tolist() == [IGNORE_INDEX, 1, IGNORE_INDEX, 3]
    assert second.tolist() == [4, EOS, IGNORE_INDEX, IGNORE_INDEX]


def test_a_document_without_spans_beside_one_with_them_keeps_every_target():
    r = RowStream([np.arange(3), np.arange(3)], [0, 1], 4, BOS, EOS, [np.array([[0, 1]]), None])
    assert r.next_segment()[1].tolist() == [0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert r.next_segment()[1].tolist() == [0, 1, 2, EOS]


def _window(r: RowStream, k: int) -> list[tuple]:
    return [r.next_segment(k - j, k) for j in range(k)]


def test_a_short_document_that_would_straddle_two_windows_waits_for_the_next():
    # Segments of 4: a 1-segment document, then two of 2 segments, read in windows of 2.
    r = row([np.array([1]), np.arange(5), np.arange(6)])
    (a, pad), (b1, b2), (c1, c2) = _window(r, 2), _window(r, 2), _window(r, 2)
    assert a[0].tolist()[:2] == [BOS, 1] and a[2]
    assert pad[0].tolist() == [EOS] * 4 and pad[1].tolist() == [IGNORE_INDEX] * 4 and not pad[2]
    assert b1[0].tolist() == [BOS, 0, 1, 2] and b1[2] and not b2[2]
    assert c1[0].tolist() == [BOS, 0, 1, 2] and c1[2] and c2[0].tolist()[-1] == EOS


def test_a_document_longer_than_a_window_starts_at_once():
    r = row([np.array([1]), np.arange(9)])  # 1 segment, then 3
    (_, b1), _ = _window(r, 2), _window(r, 2)
    assert b1[0].tolist() == [BOS, 0, 1, 2] and b1[2]


def test_with_aligned_ends_a_longer_document_waits_until_its_last_segment_ends_a_window():
    # Segments of 4: a 2-segment document, then one of 3 segments, read in windows of 2.
    r = RowStream([np.arange(5), np.arange(9)], [0, 1], 4, BOS, EOS)
    segments = [r.next_segment(2 - j, 2, align_ends=True) for _ in range(3) for j in range(2)]
    assert segments[0][2] and not segments[1][2]
    pad = segments[2]  # begun here, the 3 segments would end mid-window
    assert pad[0].tolist() == [EOS] * 4 and pad[1].tolist() == [IGNORE_INDEX] * 4 and not pad[2]
    assert segments[3][0].tolist() == [BOS, 0, 1, 2] and segments[3][2]
    assert segments[5][0].tolist()[:2] == [7, 8] and segments[5][1].tolist()[1] == EOS  # it ends the third window


def test_without_a_window_documents_follow_each_other_directly():
    r = row([np.array([1]), np.arange(5)])
    r.next_segment()
    assert r.next_segment(1, 0)[2]  # the 2-segment document begins on the segment after
