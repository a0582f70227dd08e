"""Options the command groups share: help texts and checks of values typer cannot check by their type alone.

The analysis scripts' argparse options are in `poser_interp.analysis` (which owns `MATCH_HELP`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.precision import Precision
    from ..runtime.executors import Executor

WORKERS_HELP = ("models computed at once, each in a process of its own with one thread (2 on 2 cores); the numbers "
                "do not depend on it")
QUICK_HELP = ("compute only each strategy's chosen setting (the headline's numbers) and what comes free with it, not "
              "the rest of its sweep; a later run without --quick on the same results fills in the sweep, reusing "
              "these rows")

PRECISION_HELP = ("fp32 (exact), or bf16: every matrix product under bf16 autocast, ~1.9x faster on CPUs with AMX "
                  "(answer logits within ~0.3); recorded in the results manifest, one precision per results folder")


def check_precision_option(precision: str, device: str = "cpu") -> Precision:
    """--precision as a `Precision` (the one check, `core.precision.check_precision`) for the device the command
    computes on (detection: the CPU), a bad value refused as the CLI's other options are (naming the choices)."""
    import typer

    from ..core.precision import PRECISIONS, check_precision
    from ..errors import DataError

    if precision not in PRECISIONS:
        raise typer.BadParameter(f"{precision!r}: pass one of {', '.join(PRECISIONS)}", param_hint="--precision")
    try:
        return check_precision(precision, device)
    except DataError as e:
        raise typer.BadParameter(f"{precision!r}: {e}", param_hint="--precision") from None


def check_device_option(device: str) -> str:
    """--device: a torch device this machine has ('cpu', 'cuda', 'cuda:1', ...); a bad or absent one names the fix."""
    import torch
    import typer

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise typer.BadParameter(f"{device!r} is no torch device ({e}); pass 'cpu' or 'cuda'",
                                 param_hint="--device") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter(f"{device!r}: this machine has no CUDA device; pass --device cpu",
                                 param_hint="--device")
    if dev.type not in ("cpu", "cuda"):
        raise typer.BadParameter(f"{device!r}: only 'cpu' and 'cuda' devices are supported", param_hint="--device")
    return device



BACKEND_HELP = ("what runs the forward passes: 'tl' (the TransformerLens bridge) or 'nnsight' (the same hooks in "
                "nnsight traces; S3 runs locally either way); recorded in the results manifest and in each row")
REMOTE_HELP = ("with --backend nnsight: run the traces on NDIF (models given as hub:ORG/NAME, key in $NDIF_API_KEY); "
               "S3 and lens, which need the weights here, are refused")


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
