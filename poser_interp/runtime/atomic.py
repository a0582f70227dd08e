"""Files written whole or not at all: the content goes to `<path>.tmp`, which then replaces `path` (a rename, atomic
on POSIX), so a reader (or a run killed halfway) never sees half a file."""

from __future__ import annotations

from pathlib import Path


def tmp_path(path: Path) -> Path:
    """Where `path` is written before it replaces the old one: `<path>.tmp`, beside it (same filesystem)."""
    return path.with_suffix(path.suffix + ".tmp")


def write_text_atomic(path: Path, text: str, encoding: str | None = None) -> Path:
    """Write `text` to `path` atomically; returns `path`."""
    tmp = tmp_path(path)
    tmp.write_text(text, encoding=encoding)
    tmp.replace(path)
    return path
