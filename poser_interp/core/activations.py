"""Residual-stream activations read through the forward layer: at the last token, or averaged over tokens.

Used by S1 (steering directions), S4 (concept probes), S5 (lens readings) and S6 (counterfactual shift).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .forward import forward, last_logits, length_batches, stop_after
from .hooks import capture, last_position
from .tokens import PromptFormat, encode, pad_id


def last_resid(model: Any, texts: Sequence[str], layers: Sequence[int], kind: str = "resid_pre",
               fmt: PromptFormat = PromptFormat(), batch_size: int = 8) -> Float[Tensor, "layer n d_model"]:
    """Residual at the last token of each prompt, at each layer (`blocks.{L}.hook_{kind}`), without gradients."""
    ids = [encode(model.tokenizer, t, fmt) for t in texts]
    names = [model.hook_name(la, kind) for la in layers]  # type: ignore[arg-type]
    out = torch.empty(len(layers), len(texts), model.d_model)
    for idx, batch in length_batches(ids, batch_size, pad_id(model.tokenizer)):
        got: dict[str, Tensor] = {}
        forward(model, batch, [(n, capture(got, n, last_position)) for n in names], stop_at_layer=stop_after(model,
                                                                                                           layers))
        for j, n in enumerate(names):
            out[j, idx] = got[n]
    return out


def contrast_shift(model: Any, negative: Sequence[str], positive: Sequence[str], layers: Sequence[int],
                   fmt: PromptFormat = PromptFormat(), batch_size: int = 8) \
        -> tuple[Float[Tensor, "layer d_model"], Float[Tensor, " layer"]]:
    """(mean last-token residual of `negative` - that of `positive`, the mean residual norm over both), per layer
    (`resid_pre`): a contrast set's axis in the model (S1's concept direction, `concept_size`)."""
    neg = last_resid(model, negative, layers, fmt=fmt, batch_size=batch_size)
    pos = last_resid(model, positive, layers, fmt=fmt, batch_size=batch_size)
    return neg.mean(1) - pos.mean(1), torch.cat([neg, pos], dim=1).norm(dim=-1).mean(1)


def collect(model: Any, ids: Sequence[Sequence[int]], layers: Sequence[int], position: str = "last",
            batch_size: int = 16, choices: Sequence[tuple[int, int]] | None = None) \
        -> tuple[Float[Tensor, "n layer d_model"], Float[Tensor, "n 2"] | None]:
    """Residual after each layer (`hook_resid_post`) at the last token or averaged over real tokens, and,
    given each text's two answer tokens, their final logits. Hooks live only inside each forward call."""
    names = [model.hook_name(layer, "resid_post") for layer in layers]
    acts = torch.empty(len(ids), len(layers), model.d_model)
    logits = torch.empty(len(ids), 2) if choices is not None else None
    for idx, batch in length_batches(ids, batch_size, pad_id(model.tokenizer)):
        got: dict[int, Tensor] = {}
        take = last_position if position == "last" else real_mean(batch.attention_mask[:, :, None].float())
        out = last_logits(model, batch, [(n, capture(got, j, take)) for j, n in enumerate(names)])
        acts[idx] = torch.stack([got[j] for j in range(len(names))], 1)
        if logits is not None and choices is not None:
            logits[idx] = out.gather(1, torch.tensor([choices[i] for i in idx])).float()
    return acts, logits


def real_mean(mask: Float[Tensor, "batch pos 1"]) -> Callable[[Tensor], Tensor]:
    """`capture`'s take: the activation averaged over real (mask = 1) positions, detached, in float32."""
    return lambda act: (act.detach().float() * mask).sum(1) / mask.sum(1)
