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
    """Predicts the true next token of the sample its state shows it reading: the state is every input
    since the memory was last emptied, so after an emptied memory it knows no sample and predicts id 0."""

    def __init__(self, samples: list[np.ndarray], vocab: int = 258) -> None:
        super().__init__()
        self.samples, self.vocab = [torch.from_numpy(s) for s in samples], vocab

    def init_state(self, rows: int) -> list[torch.Tensor]:
        return [torch.empty(0, dtype=torch.long)] * rows

    def forward(self, inputs: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        state = [torch.cat([read, row]) for read, row in zip(state, inputs, strict=True)]
        nxt = torch.stack([self._continuation(read)[-inputs.shape[1]:] for read in state])
        return nn.functional.one_hot(nxt, self.vocab).float(), state

    def _continuation(self, read: torch.Tensor) -> torch.Tensor:
        for sample in self.samples:
            if len(sample) > len(read) and torch.equal(sample[:len(read)], read):
                return sample[1:len(read) + 1]
        return torch.zeros_like(read)


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


def drawn(distances, samples, seed=0):
    """The samples passkey_metrics draws from ``seed``: per distance, ``samples`` with the key in the first
    segment, then ``samples`` with it after max(distances) - d segments of text."""
    filler, rng = filler_stream(held_out_text(), EOS, BOS), np.random.default_rng(seed)
    return [make_sample(filler, encode, d, S, BOS, rng, lead=lead).tokens
            for d in distances for lead in (0, max(distances) - d) for _ in range(samples)]


def recited(distances, samples=4):
    return passkey_metrics(Reciter(drawn(distances, samples)), held_out_text(), encode, distances, samples, 0, S,
                           BOS, EOS, with_reset=True)


def test_at_distance_zero_the_key_is_retrieved_with_or_without_memory():
    assert recited([0]) == {"passkey/d00/accuracy": 1.0, "passkey/d00/accuracy_after_text": 1.0,
                            "passkey/d00/accuracy_reset": 1.0}


def test_memory_reset_before_every_segment_loses_the_key_beyond_the_first_segment():
    assert recited([2]) == {"passkey/d02/accuracy": 1.0, "passkey/d02/accuracy_after_text": 1.0,
                            "passkey/d02/accuracy_reset": 0.0}


def test_after_text_the_key_follows_the_longest_distance_less_d_segments_of_text():
    # Retrieved only if the samples read are those drawn with these leads (0 before d = 2, 2 before d = 0).
    got = recited([0, 2])
    assert got["passkey/d00/accuracy_after_text"] == 1.0 and got["passkey/d02/accuracy_after_text"] == 1.0
    assert got["passkey/d00/accuracy_reset"] == 1.0 and got["passkey/d02/accuracy_reset"] == 0.0


def test_one_wrong_digit_is_not_a_retrieval():
    right, led = drawn([1], 1)
    wrong = right.copy()
    wrong[-1] = (wrong[-1] - ord("0") + 1) % 10 + ord("0")  # the last digit, off by one
    got = passkey_metrics(Reciter([wrong, led]), held_out_text(), encode, [1], 1, 0, S, BOS, EOS, with_reset=False)
    assert got == {"passkey/d01/accuracy": 0.0, "passkey/d01/accuracy_after_text": 1.0}


def test_evaluation_with_a_segment_too_short_names_the_setting_that_turns_it_off():
    with pytest.raises(ValueError, match=r"segment_len=32 .*evaluate\.passkey\.distances=\[\]"):
        passkey_metrics(Reciter(drawn([1], 1)), held_out_text(), encode, [1], 1, 0, 32, BOS, EOS,
                        with_reset=False)
