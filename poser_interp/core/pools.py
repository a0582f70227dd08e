"""Prompts from outside the benchmark, for strategies that need more than the scored prompts.

S1 averages its steering directions over them and S3 fine-tunes on them. The choice depends only on the seed
and the prompt ids (never on the model), and never touches a benchmark prompt (checked).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.scenario import FactRole, Oversight, Scenario, load_scenarios
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
            raise StrategyError(f"{path.parent} has no test.jsonl; pass a testbed's data directory or a scenario "
                                "file that is not the benchmark")
    return path


def scenario_pool(data: str | None, spec: Any, scored: Sequence[Scenario], oversight: Oversight | None, n: int,
                  seed: int, tokenizer: Any, max_tokens: int, need_critical: bool = False) -> list[Scenario]:
    """n prompts of one oversight (None: any) from `data`, chosen by a hash of (seed, id), never benchmark ones.

    The choice does not depend on the model, so both models of a pair get the same prompts. Any overlap with
    the scored prompts (same id or same rendered text, or a file of the benchmark split) raises. Prompts over
    `max_tokens` (and, with need_critical, prompts without `critical` facts) are passed over.
    """
    path = data_source(data, spec)
    pool = load_scenarios(path)
    ids, texts = {s.id for s in scored}, {s.render() for s in scored}
    clash = [s.id for s in pool if s.id in ids or s.render() in texts or s.meta.get("split") == "benchmark"]
    if clash:
        raise StrategyError(f"{path} shares {len(clash)} prompts with the benchmark (e.g. {clash[:3]}); these "
                            "strategies must take their prompts from outside it: use the testbed's data/test.jsonl")
    fmt, chosen = PromptFormat(max_tokens=10**6), list[Scenario]()
    pool = [s for s in pool if (oversight is None or s.oversight is oversight)
            and (not need_critical or s.facts_with_role(FactRole.CRITICAL))]
    for s in sorted(pool, key=lambda s: stable_seed("pool", seed, s.id)):
        if len(chosen) == n:
            break
        if len(encode(tokenizer, s.render(), fmt)) <= max_tokens:
            chosen.append(s)
    if len(chosen) < min(n, 2):
        what = f"{oversight or 'any'}-oversight prompts" + (" with critical facts" if need_critical else "")
        raise DataError(f"{path}: only {len(chosen)} {what} of <= {max_tokens} tokens; need {n}. Pass a larger "
                        "scenario file as data=, or use contrast='good' when the data has no fact roles")
    return chosen
