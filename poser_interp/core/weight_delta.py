"""How far fine-tuning moved a model from its base: the Frobenius norm of the whole weight change.

For a LoRA adapter the change of each adapted linear is `scale * B @ A` (scale = alpha / r); its squared
Frobenius norm is `scale**2 * sum((B^T B) * (A A^T))`, an r x r product, so the norm never materialises the
full-size change and is differentiable (the training loss can hold it at a target: `LoraRecipe.delta_norm_target`).
The total is `sqrt(sum over modules of ||delta W||_F^2)`, the norm of all changes stacked into one vector. For a
full checkpoint it is the same norm over every parameter the two state dicts share.

Measured on the shipped LoRA testbeds, this number alone told every faker from its aligned partner (fakers train
longer), so it is a baseline every detector must beat (`strategies.baselines`, name `weight_delta`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _pair_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||B A||_F^2 for A (r x in), B (out x r), without forming B A."""
    a, b = a.float(), b.float()
    return ((b.T @ b) * (a @ a.T)).sum().clamp(min=0.0)


def lora_delta_sq(model: Any) -> torch.Tensor:
    """Differentiable sum over the LoRA linears of a peft model of ||scale * B A||_F^2 (active adapter)."""
    total: torch.Tensor | None = None
    for module in model.modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if not isinstance(lora_a, torch.nn.ModuleDict) or not lora_a:
            continue
        for name, a in lora_a.items():
            scale = float(module.scaling[name])
            b: Any = lora_b[name]  # type: ignore[index]
            term = scale ** 2 * _pair_sq(a.weight, b.weight)  # type: ignore[arg-type]
            total = term if total is None else total + term
    if total is None:
        raise ValueError("the model has no LoRA layers (weight-delta norm of an adapter model)")
    return total


def lora_delta_norm(model: Any) -> torch.Tensor:
    """`sqrt(lora_delta_sq(model))`: the norm of the adapter's whole weight change (differentiable)."""
    return lora_delta_sq(model).sqrt()


def adapter_delta_norm(adapter_dir: str | Path) -> float:
    """The same norm read from a saved peft adapter folder (safetensors + adapter_config.json)."""
    from safetensors.torch import load_file

    folder = Path(adapter_dir)
    config = json.loads((folder / "adapter_config.json").read_text())
    rank = config["r"]
    alpha = config.get("lora_alpha", rank)
    if config.get("use_rslora"):
        raise ValueError(f"{folder}: rsLoRA adapters are not supported by the weight-delta norm")
    weights = load_file(str(folder / ADAPTER_WEIGHTS))
    scale = alpha / rank
    total = 0.0
    pairs = 0
    for key, a in weights.items():
        if ".lora_A." not in key:
            continue
        b = weights.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise ValueError(f"{folder}: {key} has no lora_B partner")
        total += scale ** 2 * float(_pair_sq(a, b))
        pairs += 1
    if not pairs:
        raise ValueError(f"{folder}: no LoRA weights in {ADAPTER_WEIGHTS}")
    return total ** 0.5


def state_delta_norm(tuned: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor],
                     skip: Iterable[str] = ()) -> float:
    """Norm of `tuned - base` over the parameters both hold with equal shapes (full checkpoints).

    Raises when no parameter is shared (two different architectures)."""
    skipped = set(skip)
    total, shared = 0.0, 0
    for name, w in tuned.items():
        if name in skipped or name not in base or base[name].shape != w.shape:
            continue
        total += float((w.float() - base[name].float()).pow(2).sum())
        shared += 1
    if not shared:
        raise ValueError("the two checkpoints share no parameter of equal shape (different architectures?)")
    return total ** 0.5


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors weight files of a Hugging Face checkpoint folder (one file or shards)."""
    root = Path(folder)
    files = sorted(root.glob("*.safetensors"))
    files = [f for f in files if f.name != ADAPTER_WEIGHTS]
    if not files:
        raise ValueError(f"{root}: no *.safetensors weight files (save the checkpoint with save_pretrained, "
                         "safe_serialization=True)")
    return files


def checkpoint_delta_norm(tuned: str | Path, base: str | Path) -> float:
    """`state_delta_norm` of two checkpoint folders, read tensor by tensor (never both whole models in memory)."""
    from safetensors import safe_open

    def index(folder: str | Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for f in weight_files(folder):
            with safe_open(str(f), framework="pt") as handle:
                out.update({k: f for k in handle.keys()})  # noqa: SIM118 (safe_open handles are not mappings)
        return out

    tuned_index, base_index = index(tuned), index(base)
    total, shared = 0.0, 0
    for name, file in tuned_index.items():
        if name not in base_index:
            continue
        with safe_open(str(file), framework="pt") as a, safe_open(str(base_index[name]), framework="pt") as b:
            wa, wb = a.get_tensor(name), b.get_tensor(name)
        if wa.shape != wb.shape:
            continue
        total += float((wa.float() - wb.float()).pow(2).sum())
        shared += 1
    if not shared:
        raise ValueError(f"{tuned} and {base} share no parameter of equal shape (different architectures?)")
    return total ** 0.5
