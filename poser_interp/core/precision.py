"""Arithmetic precision of a run: fp32 (exact, the default), or bf16 (fp16: GPUs) autocast on the run's device.

On CPUs with bf16 matrix units (Intel AMX, `amx_bf16` in /proc/cpuinfo; measured here: a SmolLM2 forward of
8 x 150 tokens on one thread 2.19 s in fp32, 0.80 s under bf16 autocast as a plain HF model, 1.73x through the
hooked model, 1.89x for a LoRA step: `bench/precision.py`) autocast runs every matrix product in
bf16 while weights, the residual stream, norms and softmaxes stay fp32. Answer logits then differ by up to ~0.3
(on logits of ~30), so a run's precision is part of its configuration: recorded in the results manifest (only when
not fp32, so stores written before the option existed stay valid) and never mixed with the other precision in
one results folder.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

import torch

from ..errors import DataError
from .devices import device_type

Precision = Literal["fp32", "bf16", "fp16"]
"""An arithmetic precision: a run's, a training's (a string becomes one, once, through `check_precision`)."""
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
F = TypeVar("F", bound=Callable[..., Any])
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AUTOCAST_TYPES = ("cpu", "cuda")
"""The device types a run's autocast can be on (`computing_in`)."""


def check_precision(precision: str, device: str | None = None) -> Precision:
    """`precision` as a `Precision`, or DataError naming the choices; with a `device`, also whether autocast can run it
    there (fp16: GPUs only). A recipe or run config names a precision before its device is known (device None)."""
    if precision not in PRECISIONS:
        raise DataError(f"precision {precision!r}: pass one of {', '.join(PRECISIONS)} (CLI: --precision / --dtype)")
    if precision == "fp16" and device is not None and device_type(device) == "cpu":
        raise DataError("fp16 autocast is for GPUs: on the CPU pass --dtype bf16 (or fp32)")
    return cast(Precision, precision)


@contextlib.contextmanager
def computing_in(precision: str, device: str = "cpu") -> Iterator[None]:
    """The block's matrix products in `precision` on `device`'s type (autocast follows the device: a GPU run's bf16 is
    CUDA autocast, not the CPU's); fp32: nothing changes."""
    if check_precision(precision, device) == "fp32":
        yield
        return
    with torch.autocast(device_type(device), dtype=_DTYPES[precision]):
        yield


def in_fp32(fn: F) -> F:
    """`fn` always computes in fp32, even inside a bf16 block: fits and read-outs on collected activations (probes,
    the tuned lens, whose fit is cached for every later run), where bf16's rounding buys no time and costs accuracy.
    The autocast switched off is the one in use (the CPU's, or a GPU run's CUDA autocast)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            for kind in AUTOCAST_TYPES:
                if torch.is_autocast_enabled(kind):
                    stack.enter_context(torch.autocast(kind, enabled=False))
            return fn(*args, **kwargs)

    return cast(F, wrapper)


def scored_with(device: str, precision: str) -> dict[str, str]:
    """{'device': its type, 'precision': ...} where they are not the defaults ('cpu', 'fp32'): what a record of
    measurements notes (left out at the defaults, so records written before the options existed stay valid)."""
    out = {"device": device_type(device)} if device_type(device) != "cpu" else {}
    return out | ({"precision": precision} if precision != "fp32" else {})


def precision_for(strategy: object, precision: Precision) -> Precision:
    """The precision `strategy` runs in: fp32 where it declares `exact_arithmetic`, else the run's."""
    return "fp32" if getattr(strategy, "exact_arithmetic", False) else check_precision(precision)


def bf16_units() -> bool:
    """Whether this CPU has bf16 matrix units (AMX), where `bf16` pays; elsewhere it may be slower than fp32."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
