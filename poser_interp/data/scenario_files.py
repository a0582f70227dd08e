"""Scenario files: this project's JSON Lines (one scenario per line, optionally gzip-compressed) written and read,
and POSER-format JSON lists read through `poser_data` (auto-detected)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..runtime.atomic import tmp_path
from ..runtime.jsonio import json_objects
from .poser_data import load_poser_file
from .scenario import Scenario


def stored(path: str | Path) -> Path:
    """`path`, or its gzip-compressed twin `<path>.gz` where only that exists (testbeds keep their large training
    pool as `train.jsonl.gz`; every reader asks for `train.jsonl`)."""
    path = Path(path)
    gz = path.with_name(path.name + ".gz")
    return gz if not path.exists() and gz.exists() else path


def save_scenarios(scenarios: Iterable[Scenario], path: str | Path) -> Path:
    """One JSON object per line, written atomically; a path ending in `.gz` is gzip-compressed (byte-stable:
    no timestamp in the header)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    text = "".join(json.dumps(s.to_dict(), sort_keys=True) + "\n" for s in scenarios)
    if path.suffix == ".gz":
        with tmp.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write(text.encode())
    else:
        tmp.write_text(text)
    tmp.replace(path)
    return path


def load_scenarios(path: str | Path, **poser_kwargs: Any) -> list[Scenario]:
    """Load a scenario file: this project's JSONL, or a POSER-format JSON list (auto-detected).

    poser_kwargs go to `poser_data.load_poser_file` (e.g. `faker=True` for an unknown persona directory).
    """
    path = stored(path)
    if not path.exists():
        raise DataError(f"scenario file {path} does not exist; generate one with `poser-interp generate` "
                        "or pass the path of a POSER-format JSON file")
    if path.is_dir():
        raise DataError(f"{path} is a directory; pass a scenario file (.jsonl or POSER .json)")
    try:
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"cannot read scenario file {path}: {e}") from e
    if not text.strip():
        raise DataError(f"scenario file {path} is empty")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return load_poser_file(path, **poser_kwargs).scenarios
    scenarios = []
    for n, d in json_objects(text.splitlines(), path, "scenario files hold one JSON object per line",
                             hint_objects=False):
        scenarios.append(Scenario.from_dict(d, where=f"{path}:{n}"))
    if not scenarios:
        raise DataError(f"scenario file {path} holds no scenarios")
    return scenarios
