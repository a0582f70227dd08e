"""Growing a generated testbed's benchmark pool until every pair holds enough confidence-matched prompts.

A pair's benchmark keeps only candidates both models answer aligned with clean margins within
`bench_margin_tol` (`build.write_pairs`), so a pair of models far apart in confidence keeps few. Each round
draws `chunk` more good-oversight candidates from the testbed's own generator config (`generator.extra_benchmark`:
same topics and wordings, a generator of their own, no prompt of any split repeated), scores every model on the
candidates it lacks, and rewrites the pairs; rounds stop once every pair has `min_prompts` or after `max_rounds`.
Everything written is resumable: a round's candidates are saved before scoring, each model's probabilities
atomically after it, and a rerun scores only what is missing. The models themselves are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.models import load_hf, load_tokenizer
from ..core.precision import computing_in, scored_with
from ..data.generator import GeneratorConfig, extra_benchmark
from ..data.scenario import Scenario
from ..data.scenario_files import load_scenarios, save_scenarios, stored
from ..errors import DataError
from ..runtime.jsonio import read_json, write_json_atomic
from ..runtime.locking import hold
from .build import EXTRA_BENCHMARK, TestbedConfig, extra_benchmark_files, prepare_data, write_pairs
from .folder import Testbed, p_aligned_hf

Log = Callable[[str], None]


@dataclass(frozen=True)
class GrowResult:
    """What a `grow_benchmark` call did."""

    rounds: int
    """Extra rounds written in all (this call's and earlier ones)."""
    candidates: int
    """Benchmark candidates in all (the build's and every round's)."""
    sizes_before: dict[str, int]
    sizes_after: dict[str, int]
    scored: dict[str, int]
    """model id -> candidates it was scored on in this call."""
    seconds: float
    min_prompts: int
    """The size every pair was grown toward."""

    @property
    def met(self) -> bool:
        return bool(self.sizes_after) and min(self.sizes_after.values()) >= self.min_prompts


def grow_benchmark(testbed: Testbed, min_prompts: int = 60, chunk: int = 600, max_rounds: int = 4,
                   threads: int = 1, log: Log = print, device: str = "cpu", precision: str = "fp32") -> GrowResult:
    """Add rounds of benchmark candidates until every pair keeps >= `min_prompts` (or `max_rounds` rounds exist).

    device, precision: where and in what arithmetic candidates are scored (`core.devices`, `core.precision`); the
    manifest's `benchmark_pool` records them when not 'cpu' / 'fp32'."""
    if min_prompts < 1 or chunk < 1 or max_rounds < 0:
        raise DataError(f"min_prompts={min_prompts}, chunk={chunk}, max_rounds={max_rounds}: need min_prompts >= 1, "
                        "chunk >= 1 and max_rounds >= 0")
    config = TestbedConfig.from_dict(testbed.manifest["config"])  # a build never changes the data options
    if config.source != "generated":
        raise DataError(f"{testbed.root} is built on POSER's data, whose benchmark is POSER's own files; only a "
                        "generated testbed can draw more candidates")
    with hold(testbed.root, "testbed folder"):  # no build may write the manifest meanwhile
        fresh = Testbed.open(testbed.root)  # the manifest as it is now, not as it was when `testbed` was opened
        return _grow(fresh, config, min_prompts, chunk, max_rounds, threads, log, device, precision)


def _grow(testbed: Testbed, config: TestbedConfig, min_prompts: int, chunk: int, max_rounds: int, threads: int,
          log: Log, device: str = "cpu", precision: str = "fp32") -> GrowResult:
    start, root = time.perf_counter(), testbed.root
    data_dir = root / "data"
    tokenizer = load_tokenizer(config.base.name)
    data = prepare_data(config, root, tokenizer, log)  # the build's candidates and every round written so far
    gen = GeneratorConfig.load(data_dir / "generator_config.json")
    before = {p: int(e["benchmark_size"]) for p, e in testbed.pairs.items()}
    scored: dict[str, int] = {}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        while True:
            for model_id, n in _score_missing(testbed, config, data.benchmark, tokenizer, log, device,
                                              precision).items():
                scored[model_id] = scored.get(model_id, 0) + n
            testbed.manifest["pairs"] = write_pairs(root, testbed.models, data.benchmark, config.bench_margin_tol)
            rounds = len(extra_benchmark_files(data_dir))
            testbed.manifest["benchmark_pool"] = {"candidates": len(data.benchmark), "extra_rounds": rounds,
                                                  "min_prompts": min_prompts, "chunk": chunk,
                                                  **scored_with(device, precision)}
            write_json_atomic(root / "manifest.json", testbed.manifest)
            sizes = {p: int(e["benchmark_size"]) for p, e in testbed.pairs.items()}
            short = sorted(p for p, n in sizes.items() if n < min_prompts)
            if not short:
                break
            if rounds >= max_rounds:
                log(f"{len(short)} pairs still under {min_prompts} prompts after {rounds} extra rounds (--max-rounds); "
                    f"smallest {min(sizes.values())}")
                break
            new = extra_benchmark(gen, chunk, rounds + 1, _every_prompt(data_dir), tokenizer)
            save_scenarios(new, data_dir / EXTRA_BENCHMARK.format(round=rounds + 1))  # atomic: whole or absent
            data.benchmark.extend(new)
            log(f"round {rounds + 1}: {len(new)} new candidates ({len(short)} pairs under {min_prompts}, smallest "
                f"{min(sizes.values())})")
    finally:
        torch.set_num_threads(previous)
    return GrowResult(rounds=len(extra_benchmark_files(data_dir)), candidates=len(data.benchmark),
                      sizes_before=before, sizes_after=sizes, scored=scored,
                      seconds=time.perf_counter() - start, min_prompts=min_prompts)


def _every_prompt(data_dir: Path) -> list[Scenario]:
    """Every scenario of every split and round written (extra candidates must repeat none of them)."""
    names = ["train", "test", "benchmark", "test_heldout_topics"]
    paths = [stored(data_dir / f"{n}.jsonl") for n in names] + extra_benchmark_files(data_dir)
    return [s for p in paths if p.exists() for s in load_scenarios(p)]


def _score_missing(testbed: Testbed, config: TestbedConfig, bench: list[Scenario], tokenizer: object,
                   log: Log, device: str = "cpu", precision: str = "fp32") -> dict[str, int]:
    """Score every model on the candidates its `benchmark_probs.json` lacks; model id -> how many."""
    done: dict[str, int] = {}
    for model_id in sorted(testbed.models):
        path = testbed.adapter_dir(model_id) / "benchmark_probs.json"
        probs = read_json(path, f"benchmark probabilities of {model_id}")
        missing = [s for s in bench if s.id not in probs]
        if not missing:
            continue
        t0 = time.perf_counter()
        merged, _ = load_hf(testbed.spec(model_id), device)  # hash-checked
        with computing_in(precision, device):
            p = p_aligned_hf(merged, tokenizer, missing, max_tokens=config.max_tokens)
        probs.update({s.id: float(x) for s, x in zip(missing, p, strict=True)})
        write_json_atomic(path, probs)
        done[model_id] = len(missing)
        log(f"{model_id}: scored {len(missing)} candidates in {time.perf_counter() - t0:.0f} s")
    return done
