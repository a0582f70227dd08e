"""Contrast datasets for concept probes (S4): the project's own `probes/*.jsonl`, and POSER's files as a check.

A contrast set holds texts on the *positive* (benign) and *negative* (suspicious) side of one concept, e.g.
security vs vulnerability. The project's files are JSON Lines, one minimal pair per line:
`{"positive": str, "negative": str, "concept": str}` (see `probes/README.md`). POSER's concept files are
JSON lists of `{"example": str}`, one file per side (security.json vs vulnerability.json); they are not
paired, and are loaded only to check our directions against an external dataset, never copied.

Held-out splits keep both sides of a pair together, so a probe is never tested on the twin of a training text.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError, StrategyError
from ..runtime.jsonio import json_objects
from .poser_data import load_concept_file, require_poser_dir

if TYPE_CHECKING:
    from .scenario import Scenario

PROBES_DIR_ENV = "POSER_INTERP_PROBES"
FIELDS = ("positive", "negative", "concept")
FIX = 'each line must be a JSON object {"positive": text, "negative": text, "concept": name} (see probes/README.md)'
POSER_PAIRS: dict[str, tuple[str, str]] = {
    "security": ("security.json", "vulnerability.json"),
    "oversight": ("competence.json", "incompetence.json"),
}
"""Our concept name -> (POSER positive file, POSER negative file) in POSER's concepts/ directory."""


def _hash(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def default_probes_dir() -> Path:
    """$POSER_INTERP_PROBES, else `probes/` at the repository root."""
    env = os.environ.get(PROBES_DIR_ENV)
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "probes"


@dataclass(frozen=True)
class ContrastSet:
    """Texts on each side of one concept; `paired` means positive[i] and negative[i] form a minimal pair."""

    concept: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    paired: bool = True
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "positive", tuple(self.positive))
        object.__setattr__(self, "negative", tuple(self.negative))
        if not self.positive or not self.negative:
            raise DataError(f"concept {self.concept!r} ({self.source}): both sides need at least one text")
        if self.paired and len(self.positive) != len(self.negative):
            raise DataError(f"concept {self.concept!r}: a paired set needs as many positive as negative texts")

    def __len__(self) -> int:
        return min(len(self.positive), len(self.negative))

    def texts(self) -> tuple[str, ...]:
        return self.positive + self.negative

    def split(self, heldout_fraction: float, seed: int = 0) -> tuple[ContrastSet, ContrastSet]:
        """(train, held-out), assigned by a hash of each pair's text (stable when pairs are added or reordered)."""
        if not 0 < heldout_fraction < 1:
            raise DataError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")

        def part(texts: Sequence[str], side: str) -> tuple[list[int], list[int]]:
            order = sorted(range(len(texts)), key=lambda i: _hash("split", seed, self.concept, side, texts[i]))
            k = max(1, round(heldout_fraction * len(texts)))
            if len(texts) - k < 1:
                raise DataError(f"concept {self.concept!r} has too few examples ({len(texts)}) to hold any out; "
                                "add more, or lower heldout_fraction")
            return sorted(order[k:]), sorted(order[:k])

        if self.paired:
            tr, ho = part([p + "\n" + n for p, n in zip(self.positive, self.negative, strict=True)], "pair")
            trn, hon = tr, ho
        else:
            (tr, ho), (trn, hon) = part(self.positive, "positive"), part(self.negative, "negative")

        def take(pos: list[int], neg: list[int], tag: str) -> ContrastSet:
            return ContrastSet(self.concept, tuple(self.positive[i] for i in pos),
                               tuple(self.negative[i] for i in neg), self.paired, f"{self.source} ({tag})")

        return take(tr, trn, "train"), take(ho, hon, "held-out")


def load_contrast_file(path: str | Path) -> dict[str, ContrastSet]:
    """The contrast sets of one JSON Lines file, by concept (a file may hold several concepts)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"contrast file {path} does not exist; pass a .jsonl file from probes/ ({FIX})")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read contrast file {path}: {e}") from e
    pairs: dict[str, list[tuple[str, str]]] = {}
    for n, rec in json_objects(lines, path, FIX):
        bad = [k for k in FIELDS if not isinstance(rec.get(k), str) or not rec[k].strip()]
        if bad:
            raise DataError(f"{path}:{n}: missing or empty field(s) {bad}; {FIX}")
        if rec["positive"].strip() == rec["negative"].strip():
            raise DataError(f"{path}:{n}: the positive and negative texts are the same; a pair must contrast")
        pairs.setdefault(rec["concept"].strip(), []).append((rec["positive"].strip(), rec["negative"].strip()))
    if not pairs:
        raise DataError(f"contrast file {path} holds no pairs; {FIX}")
    return {c: ContrastSet(c, tuple(p for p, _ in ps), tuple(q for _, q in ps), True, str(path))
            for c, ps in pairs.items()}


def load_contrast_dir(folder: str | Path | None = None, concepts: Iterable[str] | None = None) \
        -> dict[str, ContrastSet]:
    """Every concept in `folder`/*.jsonl (default: `probes/`); `concepts` selects (and requires) some."""
    folder = Path(folder) if folder is not None else default_probes_dir()
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise DataError(f"no contrast files (*.jsonl) in {folder}; point {PROBES_DIR_ENV} or `probes_dir` at the "
                        "repository's probes/ directory")
    sets: dict[str, ContrastSet] = {}
    for f in files:
        for c, s in load_contrast_file(f).items():
            if c in sets:
                raise DataError(f"concept {c!r} appears in both {sets[c].source} and {f}; keep one file per concept")
            sets[c] = s
    if concepts is None:
        return sets
    wanted = list(concepts)
    missing = [c for c in wanted if c not in sets]
    if missing:
        raise DataError(f"concept(s) {missing} not found in {folder}; available: {sorted(sets)}")
    return {c: sets[c] for c in wanted}


def load_poser_contrast(concept: str, poser_dir: str | Path | None = None) -> ContrastSet:
    """POSER's concept files for one of our concepts (positive file vs negative file), unpaired."""
    if concept not in POSER_PAIRS:
        raise DataError(f"POSER has no files for concept {concept!r}; it has {sorted(POSER_PAIRS)}")
    folder = require_poser_dir(poser_dir) / "concepts"
    pos, neg = (load_concept_file(folder / name) for name in POSER_PAIRS[concept])
    return ContrastSet(concept, tuple(pos), tuple(neg), paired=False, source=f"POSER {folder}")


def check_not_scored(sets: Sequence[ContrastSet], prompts: Sequence[Scenario]) -> None:
    """Raise if any contrast text appears inside a scored prompt (concept data must never be scored)."""
    rendered = [p.render() for p in prompts]
    for s in sets:
        for text in s.texts():
            hit = next((p.id for p, r in zip(prompts, rendered, strict=True) if text in r), None)
            if hit is not None:
                raise StrategyError(f"contrast text of concept {s.concept!r} appears in scored prompt {hit}: "
                                    f"{text[:80]!r}. Concept data must not overlap the benchmark; edit {s.source}")
