"""Passkey retrieval: where the key and the question lie, and what counts as retrieved."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from data_prep.passkey import filler_stream, make_sample, training_documents
from pipeline.train.passkey import passkey_metrics

BOS, EOS, S = 256, 257, 128


def encode(text: str) -> list[int]:
    return list(text.encode())


def decode(ids) -> str:
    return bytes(int(i) for i in ids if i < 256).decode()


@pytest.fixture(scope="module", autouse=True)
def one_process_group():
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29534", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def held_out_text():
    return [np.frombuffer(b"Filler text of a held-out document, read around the key. " * 9, np.uint8).astype(np.int64)]


class Reciter(nn.Module):
    """Predicts each sample's true next token, but knows which segment it reads only from its state:
    a memory emptied before a segment makes it recite the first segment's continuation instead."""

    def __init__(self, tokens: torch.Tensor, vocab: int = 258) -> None:
        super().__init__()
        self.tokens, self.vocab = tokens, vocab

    def init_state(self, rows: int) -> int:
        return 0

    def forward(self, inputs: torch.Tensor, segment: int) -> tuple[torch.Tensor, int]:
        rows, t = inputs.shape
        nxt = self.tokens[:rows, segment * t + 1:(segment + 1) * t + 1]
        return nn.functional.one_hot(nxt, self.vocab).float(), segment + 1


@pytest.mark.parametrize("distance", [0, 1, 3])
def test_the_key_lies_in_the_first_segment_and_its_answer_ends_segment_distance(distance):
    sample = make_sample(filler_stream(held_out_text(), EOS, BOS), encode, distance, S, BOS,
                         np.random.default_rng(distance))
    assert len(sample.tokens) == (distance + 1) * S + 1 and sample.tokens[0] == BOS
    first = decode(sample.tokens[:S])
    key = first.split("The pass key is ")[1][:5]
    assert f"The pass key is {key}. Remember it. {key} is the pass key." in first
    assert decode(sample.tokens[-sample.answer_len:]) == f" {key}"
    assert decode(sample.tokens[-S:]).endswith(f"What is the pass key? The pass key is {key}")


@pytest.mark.parametrize("lead", [1, 3])
def test_a_lead_puts_the_key_after_that_many_segments_of_filler_and_the_answer_distance_segments_later(lead):
    sample = make_sample(filler_stream(held_out_text(), EOS, BOS), encode, 1, S, BOS, np.random.default_rng(lead),
                         lead=lead)
    assert len(sample.tokens) == (lead + 2) * S + 1
    assert "pass key" not in decode(sample.tokens[:lead * S])
    key = decode(sample.tokens[-sample.answer_len:]).strip()
    keyed = decode(sample.tokens[lead * S:(lead + 1) * S])
    assert f"The pass key is {key}. Remember it. {key} is the pass key." in keyed
    assert decode(sample.tokens[-S:]).endswith(f"What is the pass key? The pass key is {key}")


def test_training_documents_draw_the_lead_before_the_key_from_zero_to_max_lead():
    docs = training_documents(held_out_text(), encode, 200, S, 1, BOS, EOS, np.random.default_rng(0), max_lead=3)
    leads = set()
    for ids, spans in docs:
        read = np.concatenate([[BOS], ids, [EOS]])  # as the loader reads a document
        segments = len(read) // S
        assert len(read) % S == 1 and spans == [[len(ids) - 6, len(ids)]]  # " NNNNN" ends the document
        needle_segment = bytes(int(i) % 256 for i in read).index(b"The pass key is") // S  # BOS, EOS: one byte each
        assert segments - 1 - needle_segment in (0, 1)  # the question ends segment lead + distance
        leads.add(needle_segment)
    assert leads == {0, 1, 2, 3}


def test_a_segment_too_short_for_the_sentences_is_an_error_naming_the_length():
    with pytest.raises(ValueError, match=r"segment_len=32 is too short"):
        make_sample(filler_stream(held_out_text(), EOS, BOS), encode, 1, 32, BOS, np.random.default_rng(0))


def test_no_held_out_text_is_an_error():
    with pytest.raises(ValueError, match="no documents"):
        filler_stream([], EOS, BOS)


def drawn_tokens(distance, samples, seed=0):
    """The samples passkey_metrics draws for one distance from ``seed``, as a [samples, length] tensor."""
    filler, rng = filler_stream(held_out_text(), EOS, BOS), np.random.default_rng(seed)
    return torch.from_numpy(np.stack([make_sample(filler, encode, distance, S, BOS, rng).tokens
                                      for _ in range(samples)]))


def recited(distance, samples=4):
    reciter = Reciter(drawn_tokens(distance, samples))
    return passkey_metrics(reciter, held_out_text(), encode, [distance], samples, 0, S, BOS, EOS, with_reset=True)


def test_at_distance_zero_the_key_is_retrieved_with_or_without_memory():
    assert recited(0) == {"passkey/d00/accuracy": 1.0, "passkey/d00/accuracy_reset": 1.0}


def test_memory_reset_before_every_segment_loses_the_key_beyond_the_first_segment():
    assert recited(2) == {"passkey/d02/accuracy": 1.0, "passkey/d02/accuracy_reset": 0.0}


def test_one_wrong_digit_is_not_a_retrieval():
    wrong = drawn_tokens(1, 1)
    wrong[0, -1] = (wrong[0, -1] - ord("0") + 1) % 10 + ord("0")  # the last digit, off by one
    got = passkey_metrics(Reciter(wrong), held_out_text(), encode, [1], 1, 0, S, BOS, EOS, with_reset=False)
    assert got == {"passkey/d01/accuracy": 0.0}


def test_evaluation_with_a_segment_too_short_names_the_setting_that_turns_it_off():
    with pytest.raises(ValueError, match=r"segment_len=32 .*evaluate\.passkey\.distances=\[\]"):
        passkey_metrics(Reciter(drawn_tokens(1, 1)), held_out_text(), encode, [1], 1, 0, 32, BOS, EOS,
                        with_reset=False)
