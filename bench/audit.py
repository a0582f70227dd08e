"""Benchmark: where an audit's wall time goes, for one pair of 135M models (target: <= 2 minutes on 2 cores).

Run: .venv/bin/python bench/audit.py [--a TESTBED::MODEL] [--b TESTBED::MODEL] [--detectors ...] [--prompts N]
Default: v2c's guardian-s0 against grabber-s0, 48 of v2c's benchmark prompts, a fresh output folder. Prints the
whole wall time and its parts: writing the pair as a testbed (hashing + scoring both models on every prompt), and
each detector's compute as the results store records it (the rest is loads and bootstrap).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", default="testbeds/v2c::guardian-s0")
    parser.add_argument("--b", default="testbeds/v2c::grabber-s0")
    parser.add_argument("--detectors", default="concept_size,noise,attention")
    parser.add_argument("--prompts", type=int, default=48, help="prompts taken from v2c's benchmark")
    args = parser.parse_args(argv)
    from poser_interp.audit import AuditConfig, audit
    from poser_interp.data.scenario_files import load_scenarios, save_scenarios

    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        save_scenarios(load_scenarios("testbeds/v2c/data/benchmark.jsonl")[:args.prompts], prompts)
        marks: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        audit(args.a, args.b, Path(tmp) / "audit", AuditConfig(prompts=str(prompts),
                                                               detectors=tuple(args.detectors.split(","))),
              log=lambda m: marks.append((time.perf_counter() - t0, m)))
        total = time.perf_counter() - t0
        rows = [json.loads(x) for x in (Path(tmp) / "audit" / "results" / "rows.jsonl").read_text().splitlines()]
        verdict = json.loads((Path(tmp) / "audit" / "verdict.json").read_text())
    written = next((t for t, m in marks if "prompts kept" in m), float("nan"))
    print(f"audit wall time: {total:.1f} s (target <= 120 s)")
    print(f"  pair written as a testbed (hash + score both models): {written:.1f} s")
    by = {}
    for r in rows:
        by[r["strategy"]] = by.get(r["strategy"], 0.0) + r["seconds"]
    for name, seconds in sorted(by.items(), key=lambda kv: -kv[1]):
        print(f"  {name}: {seconds:.1f} s of compute (both models)")
    print(f"  the rest (model loads, bootstrap, page): {total - written - sum(by.values()):.1f} s")
    print(f"verdict: {verdict['faker']} ({verdict['reason']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
