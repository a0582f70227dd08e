"""Where a run computes: `--device` (cpu, cuda, cuda:N, auto), a model's placement there, and its memory.

A model is placed whole on one device (`model.to(device)`), or, with `--device auto` on a machine with more than
one GPU, split across them by Hugging Face accelerate (`device_map`, its "auto" balance); TransformerLens 4.3's
bridge takes a model so dispatched (`TransformerBridge.boot_transformers(hf_model=...)` reads `hf_device_map`).
Tensors a strategy makes follow the tensor they meet (`tensor.device`) or the model's input device (`input_device`);
results come back to the CPU as numpy. Draws of random numbers stay on the CPU's generator wherever the model
runs, so a run's noise is the same on every device.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..errors import DataError

DEVICE_HELP = ("cpu, cuda, cuda:N, or auto (cuda when there is a GPU; with several GPUs the model is split across "
               "them); recorded in the results manifest when not cpu")
AUTO = "auto"
"""`check_device`'s answer for a model split across every visible GPU (`device_map="auto"`)."""
log = logging.getLogger(__name__)


def check_device(device: str, split: bool = True) -> str:
    """`device` if this machine has it; 'auto' becomes 'cuda' with one GPU, 'cpu' with none, and stays 'auto' (split
    across the GPUs) with several when `split` (else 'cuda': a training runs on one GPU). DataError naming the fix
    otherwise."""
    if device == AUTO:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return "cpu" if n == 0 else AUTO if n > 1 and split else "cuda"
    kind = _parse(device)
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            raise DataError(f"--device {device!r}: this machine has no CUDA GPU (torch sees none); pass --device cpu")
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            raise DataError(f"--device {device!r}: this machine has {torch.cuda.device_count()} GPU(s) "
                            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return device


def _parse(device: str) -> torch.device:
    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DataError(f"--device {device!r}: pass cpu, cuda, cuda:N or auto") from None
    if kind.type not in ("cpu", "cuda"):
        raise DataError(f"--device {device!r}: pass cpu, cuda, cuda:N or auto")
    return kind


def device_type(device: str | torch.device) -> str:
    """'cpu' or 'cuda' (what autocast and a results manifest name); 'auto' (split across GPUs) is 'cuda'."""
    return "cuda" if device == AUTO else _parse(str(device)).type


def place(model: Any, device: str) -> Any:
    """`model` on `device` (in place, returned): moved whole, or with 'auto' split across the visible GPUs by
    accelerate (each block whole on one GPU; `hf_device_map` says where)."""
    if device != AUTO:
        return model.to(device)
    from accelerate import dispatch_model, infer_auto_device_map

    n = torch.cuda.device_count()
    if n < 2:
        raise DataError("--device auto splits a model across GPUs, and this machine has fewer than two; pass "
                        "--device cuda (or cpu)")
    no_split = getattr(model, "_no_split_modules", None) or []
    device_map = infer_auto_device_map(model, max_memory={i: torch.cuda.mem_get_info(i)[0] for i in range(n)},
                                       no_split_module_classes=list(no_split))
    if any(str(v) in ("cpu", "disk") for v in device_map.values()):
        raise DataError("the model does not fit the GPUs' free memory (accelerate would offload part of it to the "
                        "CPU, which the hooked model does not support beside GPUs); free GPU memory or pass --device "
                        "cpu")
    return dispatch_model(model, device_map=device_map)


def input_device(model: Any) -> torch.device:
    """Where a model's inputs go: a hooked model's (`HookedModel.device`), a Hugging Face model's embedding's (its
    first parameter's, the embedding under a device_map split)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def model_bytes(model: Any) -> int:
    """Bytes held by a model's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def check_fits(need: int, device: torch.device | str, what: str) -> None:
    """On a GPU: say (a logged line, shown on stderr) the memory `what` needs and what is free, and refuse with
    DataError naming the fix when torch reports less free than that. On the CPU: nothing (the OS swaps or kills)."""
    device = torch.device(device)
    if device.type != "cuda":
        return
    free, total = torch.cuda.mem_get_info(device)
    log.warning("%s needs about %.2f GB on %s (%.2f of %.2f GB free)", what, need / 1e9, device, free / 1e9,
                total / 1e9)
    if need > free:
        raise DataError(f"{what} needs about {need / 1e9:.2f} GB on {device}, which has {free / 1e9:.2f} of "
                        f"{total / 1e9:.2f} GB free; free GPU memory, run it on a larger GPU, or pass --device cpu")


def gather_cpu(values: torch.Tensor, index: Any, dim: int = 1) -> torch.Tensor:
    """`values.gather(dim, index)` on `values`' device (the index, a list or a CPU tensor, follows it), as float32
    on the CPU: how answer logits leave the model's device."""
    index = torch.as_tensor(index, device=values.device)
    return values.gather(dim, index).float().cpu()
