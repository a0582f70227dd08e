"""JSON files of the toolkit: manifests written atomically, read with an error that names the file, and JSON Lines
records checked one by one."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError
from .atomic import write_text_atomic


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def read_json(path: Path, what: str, fix: str = "rebuild it") -> Any:
    """A JSON file; DataError naming `what`, the file and `fix` when it is missing, unreadable or not JSON."""
    if not path.exists():
        raise DataError(f"{what} not found at {path}")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{what} at {path} is unreadable or not JSON ({e}); {fix}") from e


def json_objects(lines: Iterable[str], path: Path, hint: str, hint_objects: bool = True) \
        -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank JSON Lines record; a line that is not a JSON object raises DataError
    naming the file and line, followed by `hint` (for a record that is JSON but no object, only if hint_objects)."""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not JSON ({e.msg}); {hint}") from e
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}" +
                            (f"; {hint}" if hint_objects else ""))
        yield n, rec


def jsonl_logger(path: Path) -> Callable[[dict[str, Any]], None]:
    """A log function for an analysis run: each row appended to `path` as one JSON line (the run's record, read
    back to resume or tabulate) and printed."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(row: dict[str, Any]) -> None:
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    return log
