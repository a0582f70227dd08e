"""Options the command groups share: help texts and checks of values typer cannot check by their type alone.

The analysis scripts' argparse options are in `poser_interp.analysis` (which owns `MATCH_HELP`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..core.precision import Precision
    from ..runtime.executors import Executor

WORKERS_HELP = ("models computed at once, each in a process of its own with one thread (2 on 2 cores); the numbers "
                "do not depend on it")
QUICK_HELP = ("compute only each strategy's chosen setting (the headline's numbers) and what comes free with it, not "
              "the rest of its sweep; a later run without --quick on the same results fills in the sweep, reusing "
              "these rows")

def check_precision_option(precision: str, device: str = "cpu", flag: str = "--precision") -> Precision:
    """--dtype / --precision as a `Precision` (the one check, `core.precision.check_precision`) for the device the
    command computes on, a bad value refused as the CLI's other options are (naming the choices)."""
    from ..core.precision import PRECISIONS, check_precision
    from ..errors import DataError

    if precision not in PRECISIONS:
        raise typer.BadParameter(f"{precision!r}: pass one of {', '.join(PRECISIONS)}", param_hint=flag)
    try:
        return check_precision(precision, device)
    except DataError as e:
        raise typer.BadParameter(f"{precision!r}: {e}", param_hint=flag) from None


DEVICE_HELP = ("where models compute: cpu, cuda, cuda:N, or auto (cuda when there is a GPU, else cpu; with several "
               "GPUs a model is split across them); not cpu: recorded with the results")
DTYPE_HELP = ("arithmetic: fp32 (exact), bf16, or fp16 (GPUs only): every matrix product under autocast on the "
              "device (bf16 on CPUs with AMX ~1.9x faster, answer logits within ~0.3); not fp32: recorded with the "
              "results")
OLD_PRECISION_HELP = "the old spelling of --dtype (the same choices; give one of the two)"

DeviceOpt = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help=DTYPE_HELP + " [default: fp32]", show_default=False)]
PrecisionOpt = Annotated[str | None, typer.Option("--precision", help=OLD_PRECISION_HELP, show_default=False)]


def check_device_option(device: str, split: bool = True) -> str:
    """--device (the one check, `core.devices.check_device`: a device this machine has; 'auto' resolved), a bad or
    absent one refused in one line naming the fix. split: whether 'auto' may split a model across GPUs (detection);
    a training runs on one GPU."""
    from ..core.devices import check_device
    from ..errors import DataError

    try:
        return check_device(device, split)
    except DataError as e:
        raise typer.BadParameter(str(e).removeprefix("--device "), param_hint="--device") from None


def dtype_option(dtype: str | None, precision: str | None, device: str = "cpu",
                 default: str | None = "fp32") -> Precision | None:
    """--dtype, or --precision (its old spelling), checked for `device` (fp16: GPUs); both given with different values
    are refused (the project's rule: one spelling per option). Neither: `default`."""
    if dtype is not None and precision is not None and dtype != precision:
        raise typer.BadParameter(f"--dtype {dtype} and --precision {precision} set the same option twice (--precision "
                                 "is the old spelling of --dtype); pass one of them", param_hint="--dtype")
    chosen = dtype if dtype is not None else precision if precision is not None else default
    if chosen is None:
        return None
    return check_precision_option(chosen, device, "--dtype" if dtype is not None else "--precision")


BACKEND_HELP = ("what runs the forward passes: 'tl' (the TransformerLens bridge) or 'nnsight' (the same hooks in "
                "nnsight traces; S3 runs locally either way); recorded in the results manifest and in each row")
REMOTE_HELP = ("with --backend nnsight: run the traces on NDIF (models given as hub:ORG/NAME, key in $NDIF_API_KEY); "
               "S3 and lens, which need the weights here, are refused")

AUDIT_REMOTE_HELP = ("with --backend nnsight: run the traces on NDIF (both models given as hub:ORG/NAME, key in "
                     "$NDIF_API_KEY; nothing is hashed or loaded here, the prompts are scored there); S3, lens and the "
                     "weight_delta baseline, which need the weights here, are skipped (verdict.json's `skipped` says "
                     "why)")


def check_backend_option(backend: str, remote: bool) -> str:
    """--backend and --remote: an unknown backend, or --remote without --backend nnsight, refused in one line."""
    import typer

    if backend not in ("tl", "nnsight"):
        raise typer.BadParameter(f"{backend!r}: pass tl or nnsight", param_hint="--backend")
    if remote and backend != "nnsight":
        raise typer.BadParameter("--remote runs nnsight traces on NDIF: add --backend nnsight", param_hint="--remote")
    return backend


EXECUTOR_HELP = ("where models are computed: 'local' (this machine, --workers processes) or 'ray' (one Ray task per "
                 "model, at most --workers at a time, one GPU each when the cluster has GPUs; needs the [ray] extra); "
                 "rows and resume are the same either way")
RAY_ADDRESS_HELP = ("with --executor ray: the Ray cluster to join, HOST:PORT of its head node (as `ray start --head` "
                    "prints it) or 'auto'; default: a Ray instance on this machine with --workers CPUs, for this run")


def check_executor_option(executor: str, ray_address: str | None) -> Executor:
    """--executor and --ray-address (`runtime.executors.check_executor`): an unknown executor, Ray not installed and
    an address where nothing answers are refused in one line before anything is written."""
    from ..runtime.executors import check_executor

    return check_executor(executor, ray_address)
