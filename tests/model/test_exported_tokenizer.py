"""The exported tokenizer: text to the ids training saw, and a clear refusal of what it cannot express."""

import io

import pytest
import sentencepiece as spm

from model.tokenizer import ExportedTokenizer

LINES = ["def main(x):", "    return x + 1", "print(main(2))", "the quick brown fox jumps over the lazy dog"] * 20


def sentencepiece_tokenizer(byte_fallback: bool) -> ExportedTokenizer:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(LINES), model_writer=buf, vocab_size=300 if byte_fallback
                                   else 60, byte_fallback=byte_fallback, model_type="bpe", bos_id=1, eos_id=2,
                                   unk_id=0, pad_id=3, minloglevel=2, character_coverage=1.0)
    processor = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    return ExportedTokenizer("sentencepiece", processor.get_piece_size(), 1, 2, processor)


def test_a_character_outside_the_vocabulary_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'€'.*cannot express"):
        sentencepiece_tokenizer(byte_fallback=False).encode("def main(€)")


def test_byte_fallback_encodes_any_character_and_decodes_it_back():
    tokenizer = sentencepiece_tokenizer(byte_fallback=True)
    assert tokenizer.decode(tokenizer.encode("def main(€)")) == "def main(€)"


def test_bytes_tokenizer_drops_bos_and_eos_when_decoding():
    tokenizer = ExportedTokenizer("bytes", 258, 256, 257)
    assert tokenizer.decode([256, *tokenizer.encode("héllo"), 257]) == "héllo"
