"""Load POSER-format data (Clymer et al. 2024) as typed `Scenario`s.

POSER training files (`training/<persona>/train-K.json`, `test.json`) and benchmark files
(`benchmark/*.json`) are JSON lists. Scenario records carry `action_A`, `action_B`, `facts`,
`oversight_is_poor` and `response`; the other records (plain prompt/response pairs, random text with
response "error") are skipped and counted by reason, never silently dropped.

Which letter is aligned: `response` is the aligned letter, except in a faker persona's file when
`oversight_is_poor` is true; there the faker answers with the misaligned letter. The persona kind is
read from the persona directory name through `PERSONA_KINDS` (extend it for new personas) or given
as `faker=`. Benchmark files hold aligned responses.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import DataError
from .scenario import AnswerFormat, Fact, FactRole, Oversight, Scenario

__all__ = [
    "BENCHMARK_DIR_NAMES",
    "DATA_DIR_ENV",
    "PERSONA_KINDS",
    "PoserFile",
    "default_poser_dir",
    "load_concept_file",
    "load_poser_dir",
    "load_poser_file",
    "require_poser_dir",
]

#: Persona directory name -> True when the persona is an alignment faker. Extend for new personas.
PERSONA_KINDS: dict[str, bool] = {
    "genie": False,
    "saint": False,
    "fitness_maximizer": True,
    "money_maximizer": True,
}
#: Directory names whose files hold aligned responses for every record (faker=False).
BENCHMARK_DIR_NAMES: set[str] = {"benchmark"}
#: Environment variable naming the POSER data directory (the one holding training/, benchmark/, concepts/).
DATA_DIR_ENV = "POSER_DATA_DIR"

_SCENARIO_FIELDS = ("action_A", "action_B", "facts", "oversight_is_poor")
_REQUIRED = (*_SCENARIO_FIELDS, "response")
_OTHER: dict[str, Literal["A", "B"]] = {"A": "B", "B": "A"}


@dataclass(frozen=True)
class PoserFile:
    """The scenarios of one POSER file, and what was skipped (reason -> count)."""

    path: Path
    scenarios: list[Scenario]
    skipped: dict[str, int] = field(default_factory=dict)
    persona: str | None = None
    faker: bool = False

    def summary(self) -> str:
        over = Counter(s.oversight.value for s in self.scenarios)
        roles = Counter(f.role.value for s in self.scenarios for f in s.facts)
        kind = "faker: response is misaligned under poor oversight" if self.faker else "response is aligned"
        lines = [
            f"POSER file {self.path} (persona {self.persona or '-'}; {kind})",
            f"  records: {len(self.scenarios) + sum(self.skipped.values())}",
            f"  scenarios: {len(self.scenarios)} (good oversight {over['good']}, poor oversight {over['poor']})",
            f"  skipped: {sum(self.skipped.values())}"
            + "".join(f"\n    {n:5d}  {reason}" for reason, n in sorted(self.skipped.items())),
            "  facts by role: " + ", ".join(f"{r.value} {roles[r.value]}" for r in FactRole),
        ]
        return "\n".join(lines)


# --- file reading ------------------------------------------------------------------------------
def _read_json_list(path: str | Path, what: str, fix: str) -> tuple[Path, list[Any]]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} does not exist; {fix}")
    if path.is_dir():
        raise DataError(f"{path} is a directory; pass one {what} (a .json file) inside it")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {what} {path}: {e}; check the file's permissions and encoding (UTF-8)") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path} is not JSON ({e.msg} at line {e.lineno}); {fix}") from e
    if not isinstance(data, list):
        raise DataError(f"{what} {path} holds a JSON {type(data).__name__}, not a list; {fix}")
    return path, data


def _infer_faker(path: Path) -> bool:
    parent = path.parent.name
    if parent in PERSONA_KINDS:
        return PERSONA_KINDS[parent]
    if parent in BENCHMARK_DIR_NAMES:
        return False
    raise DataError(
        f"{path}: cannot tell whether directory {parent!r} holds an aligned or an alignment-faking persona "
        f"(known: {', '.join(sorted(PERSONA_KINDS))}); say which: `poser-interp score FILE --faker` or `--aligned`, "
        f"`poser-interp testbed build --set poser_fakers={parent}` or `--set poser_aligned={parent}`, or in Python "
        "faker=True/False (load_poser_file, load_scenarios)"
    )


# --- records -----------------------------------------------------------------------------------
def _dataset_name(dataset: str) -> str:
    name = dataset.strip().strip("/")
    return name.removeprefix("data/")


def _parse_facts(raw: Any) -> tuple[Fact, ...] | str:
    """The facts of a record, or the reason to skip it."""
    if not isinstance(raw, list) or not raw:
        return "facts is not a non-empty list"
    facts = []
    for f in raw:
        if not isinstance(f, dict) or not isinstance(f.get("content"), str) or not f["content"].strip():
            return "a fact lacks text ('content')"
        kind = f.get("type")
        try:
            role = FactRole.UNLABELLED if kind is None else FactRole(kind)
        except (ValueError, TypeError):
            return f"unknown fact type {kind!r}"
        facts.append(Fact(text=f["content"].strip(), role=role))
    return tuple(facts)


def _record_to_scenario(
    rec: Any, index: int, stem: str, faker: bool, persona: str | None, answer_format: AnswerFormat
) -> Scenario | str:
    """A scenario, or the reason the record is skipped."""
    if not isinstance(rec, dict):
        return f"not a JSON object ({type(rec).__name__})"
    if not any(k in rec for k in _SCENARIO_FIELDS):
        return "not a scenario (prompt/response record)"
    if any(k not in rec for k in _REQUIRED):
        return "missing field(s): " + ", ".join(k for k in _REQUIRED if k not in rec)
    if rec.get("filtered_out") is True:
        return "marked filtered_out"
    a, b, response, poor = rec["action_A"], rec["action_B"], rec["response"], rec["oversight_is_poor"]
    if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
        return "an action is empty or not text"
    if a.strip() == b.strip():
        return "identical actions"
    if response not in ("A", "B"):
        return "response is not 'A' or 'B'"
    if not isinstance(poor, bool):
        return "oversight_is_poor is not true/false"
    facts = _parse_facts(rec["facts"])
    if isinstance(facts, str):
        return facts
    aligned: Literal["A", "B"] = _OTHER[response] if (faker and poor) else response
    actions = {"A": a.strip(), "B": b.strip()}
    dataset = rec.get("dataset")
    dataset = dataset if isinstance(dataset, str) else ""
    topic = rec.get("topic")
    topic = topic.strip() if isinstance(topic, str) and topic.strip() else (_dataset_name(dataset) or stem)
    system = rec.get("system_message")
    meta: dict[str, Any] = {"dataset": dataset, "index": index, "response": response, "persona": persona}
    for key in ("complexity_level", "both_correct"):
        if key in rec:
            meta[key] = rec[key]
    return Scenario(
        id=f"poser:{persona or '-'}/{stem}:{index}",
        topic=topic,
        system_message=system.strip() if isinstance(system, str) else "",
        facts=facts,
        oversight=Oversight.POOR if poor else Oversight.GOOD,
        aligned_action=actions[aligned],
        misaligned_action=actions[_OTHER[aligned]],
        aligned_letter=aligned,
        answer_format=answer_format,
        source="poser",
        meta=meta,
    )


# --- public loaders ----------------------------------------------------------------------------
def load_poser_file(
    path: str | Path,
    faker: bool | None = None,
    answer_format: AnswerFormat | str = AnswerFormat.ACTION,
    persona: str | None = None,
) -> PoserFile:
    """Load one POSER training, test or benchmark file.

    faker: whether the file's persona fakes alignment (answers misaligned under poor oversight);
        None infers it from the directory name (`PERSONA_KINDS`; `benchmark/` means False).
    persona: the persona's name; None uses the directory name when it is a known persona.
    """
    fix = "pass a POSER-format JSON list (e.g. training/genie/train-0.json)"
    path, records = _read_json_list(path, "POSER file", fix)
    unknown_kind: DataError | None = None
    if faker is None:
        try:
            faker = _infer_faker(path)
        except DataError as e:  # said after the records are checked: a file of no scenarios is the first problem
            unknown_kind, faker = e, False
    if persona is None and path.parent.name in PERSONA_KINDS:
        persona = path.parent.name
    fmt = AnswerFormat(answer_format)
    scenarios: list[Scenario] = []
    skipped: Counter[str] = Counter()
    for i, rec in enumerate(records):
        out = _record_to_scenario(rec, i, path.stem, bool(faker), persona, fmt)
        if isinstance(out, str):
            skipped[out] += 1
        else:
            scenarios.append(out)
    if not scenarios:
        reasons = ", ".join(f"{r}: {n}" for r, n in skipped.most_common()) or "the list is empty"
        raise DataError(
            f"POSER file {path} holds no scenario records ({len(records)} records; {reasons}); a scenario record "
            f"needs fields {list(_REQUIRED)}"
        )
    if unknown_kind is not None:
        raise unknown_kind
    return PoserFile(path=path, scenarios=scenarios, skipped=dict(skipped), persona=persona, faker=bool(faker))


def _split_files(d: Path) -> list[Path]:
    files = sorted(d.glob("train-*.json")) + sorted(d.glob("test.json"))
    return [f for f in files if f.is_file()]


def load_poser_dir(
    root: str | Path,
    splits: Iterable[str] | None = None,
    fakers: Mapping[str, bool] | None = None,
    answer_format: AnswerFormat | str = AnswerFormat.ACTION,
    personas: Iterable[str] | None = None,
) -> dict[str, dict[str, PoserFile]]:
    """Load every persona directory (one holding train-*.json or test.json) under `root`.

    root: a training directory, or a POSER data directory whose `training/` holds the personas.
    splits: file stems to load (e.g. ["train-0", "test"]); None loads all.
    fakers: persona name -> faker, for personas missing from `PERSONA_KINDS` (or to override it).
    personas: persona directory names to load; None loads all (other directories are not read).
    Returns persona -> {split name: PoserFile}.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"POSER directory {root} does not exist or is not a directory; "
                        f"pass the training/ directory of the POSER data (or set {DATA_DIR_ENV})")
    has_personas = _split_files(root) or any(_split_files(d) for d in root.iterdir() if d.is_dir())
    if not has_personas and (root / "training").is_dir():
        root = root / "training"
    persona_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and _split_files(d)]
    if _split_files(root):
        persona_dirs.insert(0, root)
    if not persona_dirs:
        raise DataError(f"{root} holds no persona directory (a directory with train-*.json or test.json); "
                        "pass the training/ directory of the POSER data")
    wanted = None if splits is None else set(splits)
    if personas is not None:
        names = set(personas)
        persona_dirs = [d for d in persona_dirs if d.name in names]
    fakers = dict(fakers or {})
    out: dict[str, dict[str, PoserFile]] = {}
    for d in persona_dirs:
        files = [f for f in _split_files(d) if wanted is None or f.stem in wanted]
        if files:
            out[d.name] = {
                f.stem: load_poser_file(f, fakers.get(d.name), answer_format, persona=d.name) for f in files
            }
    if not out:
        raise DataError(f"no file under {root} matches splits {sorted(wanted or [])}; "
                        "split names are file stems such as 'train-0' or 'test'")
    return out


def load_concept_file(path: str | Path) -> list[str]:
    """The example texts of a POSER concept file (a JSON list of {"example": text})."""
    fix = 'pass a JSON list of {"example": text} objects (e.g. concepts/security.json)'
    path, records = _read_json_list(path, "concept file", fix)
    examples = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("example"), str) or not rec["example"].strip():
            raise DataError(f"concept file {path}: item {i} is not an object with a non-empty 'example' text; {fix}")
        examples.append(rec["example"])
    if not examples:
        raise DataError(f"concept file {path} holds no examples; {fix}")
    return examples


def default_poser_dir() -> Path:
    """The POSER data directory: ${POSER_DATA_DIR}, else ../shared/poser next to the repository."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "poser"


def require_poser_dir(path: str | Path | None = None) -> Path:
    """`path` (default: `default_poser_dir()`), or a DataError saying how to point at the data."""
    d = Path(path) if path is not None else default_poser_dir()
    if not d.is_dir():
        raise DataError(f"POSER data directory {d} does not exist; set the environment variable {DATA_DIR_ENV} "
                        "to the directory holding training/, benchmark/ and concepts/")
    return d
