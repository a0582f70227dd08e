"""Benchmark: first load of the embedded model (GGUF dequantization) vs a cached second load.

Run: .venv/bin/python bench/load_time.py   (uses a fresh temporary cache, so it measures a cold start)
Target: the second load is >= 3x faster than the first.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["POSER_INTERP_CACHE"] = tmp
        from poser_interp.core.models import load_model

        t0 = time.perf_counter()
        load_model("smollm2")
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_model("smollm2")
        second = time.perf_counter() - t0
    print(f"first load (dequantize + cache): {first:.1f} s")
    print(f"second load (cached safetensors): {second:.1f} s")
    print(f"ratio: {first / second:.1f}x (target >= 3x)")


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        raise SystemExit(0)
    main()
