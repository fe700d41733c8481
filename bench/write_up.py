"""The hand-written part of a benchmark's docs page, kept when the benchmark rewrites the page."""

from __future__ import annotations

from pathlib import Path

#: Where a page's template puts the kept text (replaced by the benchmark on every run).
MARK = "WRITE-UP"


def kept_write_up(out: Path, hint: str) -> str:
    """The "What it means" section of an earlier run's page ``out`` (a rerun keeps it), or a
    placeholder saying what to write there (``hint``)."""
    old = out.read_text() if out.exists() else ""
    _, _, rest = old.partition("## What it means\n")
    kept = rest.partition("\n## ")[0].strip() if rest else ""
    return kept or f"{MARK} (by hand: {hint})"
