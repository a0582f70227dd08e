"""The results store: one JSON line per model x strategy x setting, written as it is computed, plus a manifest.

Layout of a results directory:
  manifest.json  config (seed, run options, each strategy's config), versions, the testbed's base model and
                 adapter hashes, model kinds, the pairs evaluated with their prompt ids, and (after `detect
                 --match-confidence`) `matching`: the confidence-matching tolerance and minimum prompts per pair
  rows.jsonl     {"model", "strategy", "setting", "key", "prompt_ids", "values", "meta", "seconds"} per line, and
                 "backend" when another engine than the TL bridge computed the row (`Row.backend`)

When a testbed grows (new models, so new pairs), a model's prompts (the union over its pairs) can grow too: its
stored rows on the old prompts are recomputed and appended with `"supersedes": true`; a later superseding row
replaces an earlier one of the same key when read. Any other repeated key is an error.

Each row is appended, flushed and fsynced before the next is computed, so a killed run loses at most the
row in progress. On reopening: a cut-off last line (no newline: the kill hit mid-write) is dropped with a
warning and recomputed; a broken line anywhere else, duplicate rows, or a manifest written with another
config raise DataError and change nothing on disk (a manifest without any row yet is replaced by the new one,
so a refused typo never blocks the corrected command).

One writer at a time: opening with a manifest takes the folder's write lock (`locking.hold`, held until
`close()`); a second writer is refused with the holder's pid. Readers take no lock.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..runtime.jsonio import read_json, write_json_atomic
from ..runtime.locking import hold
from ..strategies.base import PromptValues, Setting
from ..strategies.registry import added_with_default, option_flag, ran_as

MANIFEST = "manifest.json"
ROWS = "rows.jsonl"
FORMAT = 1
RowKey = tuple[str, str, str]
"""(model id, strategy name, setting key)."""


class ResumeWarning(UserWarning):
    """A results file was cut off by an interrupted run; the cut-off row is recomputed."""


@dataclass(frozen=True, eq=False)
class Row:
    """One model's per-prompt values for one strategy at one setting."""

    model: str
    strategy: str
    values: PromptValues
    seconds: float = 0.0
    """Compute time of this row (not part of the numbers: `rows_equal` ignores it)."""
    supersedes: bool = False
    """This row replaces a stored row of the same key computed on fewer prompts (a run over fewer pairs, or the
    testbed grew since)."""
    backend: str = "tl"
    """What computed it (`runner.row_backend`): 'tl' (the bridge, or no model at all; left unwritten, as in stores
    written before backends), 'nnsight', 'nnsight-remote' (NDIF) or 'local' (the strategy's own local copy)."""

    @property
    def key(self) -> RowKey:
        return (self.model, self.strategy, self.values.setting.key)

    def to_json(self) -> str:
        v = self.values
        return json.dumps({
            "model": self.model, "strategy": self.strategy, "setting": v.setting.as_dict(), "key": v.setting.key,
            "prompt_ids": list(v.prompt_ids), "values": {k: [_num(x) for x in a] for k, a in v.values.items()},
            "meta": {k: _num(x) for k, x in v.meta.items()}, "seconds": round(self.seconds, 3),
            **({"supersedes": True} if self.supersedes else {}),
            **({"backend": self.backend} if self.backend != "tl" else {}),
        }, allow_nan=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Row:
        setting = Setting.of(**d["setting"])
        if setting.key != d["key"]:
            raise ValueError(f"setting {d['setting']} does not match its key {d['key']!r}")
        values = {k: np.array([math.nan if x is None else x for x in a], dtype=np.float64)
                  for k, a in d["values"].items()}
        meta = {k: math.nan if x is None else x for k, x in d.get("meta", {}).items()}
        return cls(str(d["model"]), str(d["strategy"]), PromptValues(setting, tuple(d["prompt_ids"]), values, meta),
                   float(d.get("seconds", 0.0)), bool(d.get("supersedes", False)), str(d.get("backend", "tl")))


def _num(x: float) -> float | None:
    """JSON has no NaN: store it as null (read back as NaN), so NaN scores survive a round trip."""
    x = float(x)
    return None if math.isnan(x) else x


class ResultsStore:
    """An opened results directory. `open` checks the manifest; rows are read, checked and indexed."""

    def __init__(self, root: Path, manifest: dict[str, Any], rows: dict[RowKey, Row], incomplete_tail: bool = False,
                 lock: contextlib.ExitStack | None = None):
        self.root = root
        self.manifest = manifest
        self._rows = rows
        self.incomplete_tail = incomplete_tail
        """The file's last line was cut off (an interrupted run, or a run writing it now); its row is not read."""
        self._lock = lock

    @classmethod
    def open(cls, root: str | Path, manifest: Mapping[str, Any] | None = None) -> ResultsStore:
        """Open (or, given a manifest, create or resume) a results directory.

        With a manifest: the directory's write lock is taken (refused while another process writes it; released
        by `close()` or at exit), then a new directory is created; an existing one must hold the same config (per
        strategy, seed, run options, testbed base model and adapter hashes), else DataError and nothing is written.
        An existing manifest without any row is replaced (nothing was computed under it).
        Without one: an existing directory is opened read-only, e.g. to redraw plots (never changed on disk,
        so it is safe while a run is writing to it).
        """
        root = Path(root)
        if manifest is None:
            return cls._open(root, None)
        stack = contextlib.ExitStack()
        stack.enter_context(hold(root))
        with stack:
            store = cls._open(root, manifest)
            store._lock = stack.pop_all()
        return store

    @classmethod
    def _open(cls, root: Path, manifest: Mapping[str, Any] | None) -> ResultsStore:
        path = root / MANIFEST
        old = read_json(path, "results manifest", fix="move the folder away and rerun the `detect` command that "
                        "wrote it (its rows cannot be read without it), or let `detect` write a new folder "
                        "(its --out)") if path.exists() else None
        if old is None and manifest is None:
            raise DataError(f"no results in {root} (no {MANIFEST}); run `poser-interp detect --out {root}` first")
        if old is not None and old.get("format") != FORMAT:
            raise DataError(f"{path} has format {old.get('format')!r}, this version reads format {FORMAT}")
        rows, cut = _read_rows(root / ROWS)
        merged = dict(old) if old is not None else None
        if manifest is not None:
            new = json.loads(json.dumps(dict(manifest)))
            merged = _merge(old, new, root) if old is not None and rows else new
        assert merged is not None
        if cut is not None and manifest is not None:  # only now (everything checked) is the cut-off line removed
            warnings.warn(f"{root / ROWS}: the last line was cut off by an interrupted run; it is dropped and "
                          "its row will be recomputed", ResumeWarning, stacklevel=3)
            with (root / ROWS).open("r+b") as f:
                f.truncate(cut)
        elif cut is not None:  # read-only: a run may be writing that line right now, so the file is left alone
            warnings.warn(f"{root / ROWS}: the last line is incomplete (cut off, or being written by a running "
                          "detection); it is ignored", ResumeWarning, stacklevel=3)
        if manifest is not None:
            write_json_atomic(path, merged)
        return cls(root, merged, rows, incomplete_tail=cut is not None and manifest is None)

    def close(self) -> None:
        """Release the write lock (a no-op for a read-only store). The store stays readable."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- rows -------------------------------------------------------------------------------------
    def __contains__(self, key: RowKey) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self, strategy: str | None = None, model: str | None = None) -> list[Row]:
        return [r for r in self._rows.values()
                if (strategy is None or r.strategy == strategy) and (model is None or r.model == model)]

    def row(self, key: RowKey) -> Row:
        """The stored row of a key (KeyError when absent)."""
        return self._rows[key]

    def get(self, model: str, strategy: str, setting: Setting) -> Row:
        key = (model, strategy, setting.key)
        if key not in self._rows:
            raise DataError(f"no stored result for model {model}, strategy {strategy}, setting {setting.key} in "
                            f"{self.root}; rerun `poser-interp detect` with the same options to compute it")
        return self._rows[key]

    def append(self, row: Row) -> None:
        """Write one row durably (flush + fsync) before returning.

        A row whose key is stored already is refused unless it is marked `supersedes` (then it is appended and
        read back in place of the old one; the old line stays in the file, so nothing is overwritten).
        """
        if self._lock is None:
            raise DataError(f"the results store {self.root} was opened read-only (without a manifest) or closed; "
                            "open it with a manifest to write")
        if row.key in self._rows and not row.supersedes:
            raise DataError(f"row {row.key} is already stored in {self.root}; results are never overwritten")
        line = row.to_json() + "\n"
        with (self.root / ROWS).open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._rows[row.key] = row

    def update_manifest(self, **sections: Mapping[str, Any]) -> None:
        """Merge entries into manifest sections (e.g. pairs) and rewrite it atomically (a writer only)."""
        if self._lock is None:
            raise DataError(f"the results store {self.root} was opened read-only (without a manifest) or closed; "
                            "open it with a manifest to write")
        for name, entries in sections.items():
            self.manifest.setdefault(name, {}).update(json.loads(json.dumps(dict(entries))))
        write_json_atomic(self.root / MANIFEST, self.manifest)


def _read_rows(path: Path) -> tuple[dict[RowKey, Row], int | None]:
    """Rows by key, and the byte offset to cut the file at if its last line was cut off (else None)."""
    if not path.exists():
        return {}, None
    data = path.read_bytes()
    lines = data.split(b"\n")
    cut = None
    if lines[-1]:  # the file does not end with a newline: the last write was interrupted
        cut = len(data) - len(lines[-1])
    rows: dict[RowKey, Row] = {}
    for number, line in enumerate(lines[:-1], start=1):
        try:
            row = Row.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path} line {number} is corrupt ({type(e).__name__}: {str(e)[:120]}). Only the last "
                            "line can be cut off by an interrupted run, so this file was damaged otherwise; move the "
                            "folder away (or let `detect` write a new one: its --out). Nothing was changed.") from e
        if row.key in rows and not row.supersedes:
            raise DataError(f"{path} line {number} repeats the row {row.key}; the file was edited or merged by "
                            "hand. Remove the duplicate, or let `detect` write a new folder (its --out). Nothing was "
                            "changed.")
        rows[row.key] = row
    return rows, cut


def _merge(old: Mapping[str, Any], new: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """The old manifest extended by the new one, or DataError naming every conflict."""
    problems = []
    oc, nc = old.get("config", {}), new.get("config", {})
    for key in sorted(set(oc) | set(nc)):
        if key == "strategies":
            continue
        if key == "run" and isinstance(oc.get(key), dict) and isinstance(nc.get(key), dict):
            unwritten = {"precision": "fp32", "device": "cpu", "backend": "tl"}  # the defaults are left unwritten
            o, n = ({**unwritten, **oc[key]}, {**unwritten, **nc[key]})
            problems += [f"{k}: stored {o.get(k)!r}, now {n.get(k)!r}" for k in sorted(set(o) | set(n))
                         if o.get(k) != n.get(k)]
            continue
        if key in oc and key in nc and oc[key] != nc[key]:
            problems.append(f"{key}: stored {oc[key]!r}, now {nc[key]!r}")
    options: list[str] = []  # strategy options that differ: alone, the flags below are the fix
    flags: list[str] = []
    for name, cfg in nc.get("strategies", {}).items():
        stored = oc.get("strategies", {}).get(name)
        if stored is not None and stored != cfg:
            diff = {k: (stored[k] if k in stored else ran_as(name, k), cfg.get(k)) for k in set(stored) | set(cfg)
                    if stored.get(k) != cfg.get(k) and not (k not in stored and added_with_default(name, k, cfg[k]))}
            if diff:
                options.append(f"strategy {name}: " + ", ".join(
                    f"{k} stored {'(before the option existed) ' if k not in stored else ''}"
                    f"{'?' if a is MISSING else repr(a)}, now {b!r}" for k, (a, b) in sorted(diff.items())))
                flags += [option_flag(name, k, a) for k, (a, _) in sorted(diff.items()) if a is not MISSING]
    problems += options
    ot, nt = old.get("testbed", {}), new.get("testbed", {})
    if _base_key(ot.get("base")) != _base_key(nt.get("base")):
        problems.append(f"testbed base model: stored {ot.get('base')}, now {nt.get('base')}")
    changed = [m for m, entry in nt.get("models", {}).items() if (ot.get("models", {}).get(m) or {}).get(
        "adapter_sha256", entry.get("adapter_sha256")) != entry.get("adapter_sha256")]
    if changed and ot.get("root") and ot.get("root") != nt.get("root"):  # another testbed's results, said once
        problems.append(f"they were computed on testbed {ot['root']}, not {nt.get('root')} (the adapters of "
                        f"{len(changed)} of its models differ)")
    elif changed:
        problems.append(f"the adapters of {len(changed)} model{'s' if len(changed) != 1 else ''} changed since "
                        f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}: the testbed was rebuilt)")
    only_options = len(problems) == len(options)  # nothing but strategy options differs
    if problems:
        raise DataError(f"{root} holds results computed with another configuration: " + "; ".join(problems) +
                        ". Use a new --out directory, or rerun with the stored options" +
                        (f" (`poser-interp detect {' '.join(flags)}`)" if flags and only_options else "") +
                        ". Nothing was changed.")
    merged = json.loads(json.dumps(dict(old)))
    merged["config"].setdefault("strategies", {}).update(nc.get("strategies", {}))
    merged.setdefault("testbed", {}).setdefault("models", {}).update(nt.get("models", {}))
    merged.setdefault("pairs", {}).update(new.get("pairs", {}))
    merged["versions_last_run"] = new.get("versions", {})
    if "base" in nt:  # the real depth and width (manifests before issue 35 held the tiny defaults 4/64)
        merged["testbed"]["base"] = nt["base"]
    if "matching" in new:  # how the last run also evaluated (no row depends on it)
        merged["matching"] = new["matching"]
    return merged


def _base_key(base: Any) -> Any:
    """A recorded base model as compared on resume: n_layers/d_model count for tiny models only (other models' were
    recorded as the tiny defaults before issue 35, and are read from the model's own config since)."""
    from dataclasses import asdict

    from ..core.models import TINY_ARCHS, ModelSpec

    if not isinstance(base, dict):
        return base
    base = {**asdict(ModelSpec()), **base}  # a field added to ModelSpec since: stored without it, as its default
    if base.get("name") in TINY_ARCHS:
        return base
    return {k: v for k, v in base.items() if k not in ("n_layers", "d_model", "seed")}


def rows_equal(a: Iterable[Row], b: Iterable[Row]) -> bool:
    """Same rows (same keys, prompt ids and bit-identical values), in any order; compute times ignored."""
    da, db = {r.key: r for r in a}, {r.key: r for r in b}
    if da.keys() != db.keys():
        return False
    for k, ra in da.items():
        va, vb = ra.values, db[k].values
        if va.prompt_ids != vb.prompt_ids or va.values.keys() != vb.values.keys() or dict(va.meta) != dict(vb.meta):
            return False
        if not all(np.array_equal(va.values[n], vb.values[n], equal_nan=True) for n in va.values):
            return False
    return True
