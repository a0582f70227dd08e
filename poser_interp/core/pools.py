"""Prompts from outside the benchmark, for strategies that need more than the scored prompts.

S1 averages its steering directions over them and S3 fine-tunes on them. The choice depends only on the seed
and the prompt ids (never on the model), and never touches a benchmark prompt (checked).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.scenario import FactRole, Oversight, Scenario
from ..data.scenario_files import load_scenarios
from ..errors import DataError, StrategyError
from .seeds import stable_seed
from .tokens import PromptFormat, encode


def data_source(data: str | None, spec: Any) -> Path:
    """The scenario file a strategy takes its non-benchmark prompts from.

    data: a scenario file (.jsonl or POSER .json), or a testbed data directory (its `test.jsonl`). None: the
    testbed the model was loaded from, found through its adapter path (`<testbed>/models/<id>`); the runner
    gives strategies no testbed handle, so this is how `poser-interp detect` finds the data.
    """
    if data is None:
        adapter = getattr(spec, "adapter", None)
        root = Path(adapter).resolve().parent.parent if adapter else None
        if root is None or not (root / "manifest.json").exists():
            raise StrategyError("this strategy needs prompts outside the benchmark, and the model is not a testbed "
                                "model (no adapter under <testbed>/models/): pass data=<testbed>/data or a "
                                "scenario file, e.g. make('steering', data='testbeds/default/data')")
        data = str(root / "data")
    path = Path(data)
    if path.is_dir():
        path = path / "test.jsonl"
    if not path.exists():
        raise StrategyError(f"{path} does not exist; pass a testbed's data directory or a scenario file that is not "
                            "the benchmark (a POSER-data testbed keeps its data/ out of git: rerun its `testbed "
                            "build` command, which skips the built models and rewrites it)")
    return path


def scenario_pool(data: str | None, spec: Any, scored: Sequence[Scenario], oversight: Oversight | None, n: int,
                  seed: int, tokenizer: Any, max_tokens: int, need_critical: bool = False) -> list[Scenario]:
    """n prompts of one oversight (None: any) from `data`, chosen by a hash of (seed, id), never benchmark ones.

    The choice does not depend on the model, so both models of a pair get the same prompts. Any overlap with
    the scored prompts (same id or same rendered text, or a file of the benchmark split) raises. Prompts over
    `max_tokens` (and, with need_critical, prompts without `critical` facts) are passed over.
    """
    path = data_source(data, spec)
    fmt, chosen = PromptFormat(max_tokens=10**6), list[Scenario]()
    for s in sorted(_candidates(path, scored, oversight, need_critical), key=lambda s: stable_seed("pool", seed, s.id)):
        if len(chosen) == n:
            break
        if len(encode(tokenizer, s.render(), fmt)) <= max_tokens:
            chosen.append(s)
    _require(path, len(chosen), n, oversight, need_critical, f" of <= {max_tokens} tokens")
    return chosen


def check_pool(data: str | None, testbed_root: Path, scored: Sequence[Scenario], oversight: Oversight | None, n: int,
               need_critical: bool = False) -> None:
    """What `scenario_pool` will need, checked before any model loads (prompt lengths aside, which need a
    tokenizer): the data file exists, shares no prompt with the scored ones, and has enough prompts of the kind."""
    path = data_source(data if data is not None else str(testbed_root / "data"), None)
    _require(path, len(_candidates(path, scored, oversight, need_critical)), n, oversight, need_critical, "")


def _candidates(path: Path, scored: Sequence[Scenario], oversight: Oversight | None, need_critical: bool) \
        -> list[Scenario]:
    """The prompts of `path` of this oversight (with critical facts if asked); raises if any is a scored prompt."""
    pool = load_scenarios(path)
    ids, texts = {s.id for s in scored}, {s.render() for s in scored}
    clash = [s.id for s in pool if s.id in ids or s.render() in texts or s.meta.get("split") == "benchmark"]
    if clash:
        raise StrategyError(f"{path} shares {len(clash)} prompts with the benchmark (e.g. {clash[:3]}); these "
                            "strategies must take their prompts from outside it: use the testbed's data/test.jsonl")
    return [s for s in pool if (oversight is None or s.oversight is oversight)
            and (not need_critical or s.facts_with_role(FactRole.CRITICAL))]


def _require(path: Path, found: int, n: int, oversight: Oversight | None, need_critical: bool, cap: str) -> None:
    if found < min(n, 2):
        what = f"{oversight or 'any'}-oversight prompts" + (" with critical facts" if need_critical else "")
        raise DataError(f"{path}: only {found} {what}{cap}; need {n}. Pass a larger scenario file as data=, or use "
                        "contrast='good' when the data has no fact roles (POSER's files have none)")
