"""Debian's Chromium, headless, for tests that read what a web page renders: the DOM after its scripts ran.

Each browser runs in its own session and is stopped by its process group, renderers included:
other browsers on this machine are not ours.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

# HTML elements that have no end tag.
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def chromium() -> str:
    """The ``chromium`` command. Missing, a failure where ``scripts/test.sh`` installs it (root with apt-get),
    else a skip."""
    path = shutil.which("chromium")
    if path is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            pytest.fail("no Chromium here, though scripts/test.sh installs it as root: apt-get install chromium")
        pytest.skip("no Chromium here; apt-get install chromium")
    return path


def rendered_dom(url: str, profile: Path, timeout: float) -> str:
    """The DOM of ``url`` as HTML once its scripts ran and their requests were answered, within ``timeout`` s."""
    # Virtual time stands still while a request is pending, so the budget is spent only on the page's own
    # timers: a slow server delays the dump instead of cutting the page short.
    browser = subprocess.Popen(
        [chromium(), "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}",
         "--virtual-time-budget=10000", "--dump-dom", url],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        return browser.communicate(timeout=timeout)[0]
    finally:
        with contextlib.suppress(ProcessLookupError):  # the browser exited with all its children
            os.killpg(browser.pid, signal.SIGKILL)
        browser.wait()


def grid_rows(dom: str) -> list[dict[str, str]]:
    """The body rows of the page's ARIA grid, each as {column header's text: cell's text}, top to bottom."""
    grid = _Grid()
    grid.feed(dom)
    if not grid.header_rows:
        return []
    header_row = max(grid.header_rows)  # the column headers, below any header groups
    headers = {col: text for (row, col), text in grid.text.items() if row == header_row}
    return [{headers.get(col, str(col)): text for (r, col), text in sorted(grid.text.items()) if r == row}
            for row in sorted({row for row, _ in grid.text if row > header_row})]


def page_text(dom: str) -> str:
    """The text of the page's body, one space between pieces: what a failing test shows of the page."""
    text = _Text()
    text.feed(dom)
    return " ".join(text.pieces)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.skipping += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self.skipping -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self.skipping and data.strip():
            self.pieces.append(data.strip())


class _Grid(HTMLParser):
    """The text of every cell of a grid, by (aria-rowindex, aria-colindex); a grid may span several tables
    (pinned columns), whose rows share their index."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[int | None, int | None]] = [(None, None)]
        self.text: dict[tuple[int, int], str] = {}
        self.header_rows: set[int] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            return
        attr = dict(attrs)
        row, col = self.stack[-1]
        if attr.get("role") == "row" and attr.get("aria-rowindex"):
            row, col = int(attr["aria-rowindex"]), None
        elif attr.get("role") in ("gridcell", "columnheader") and attr.get("aria-colindex") and row is not None:
            col = int(attr["aria-colindex"])
            if attr["role"] == "columnheader":
                self.header_rows.add(row)
        self.stack.append((row, col))

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID and len(self.stack) > 1:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        row, col = self.stack[-1]
        if row is not None and col is not None and data.strip():
            known = self.text.get((row, col))
            self.text[(row, col)] = f"{known} {data.strip()}" if known else data.strip()
