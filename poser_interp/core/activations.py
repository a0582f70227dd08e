"""Residual-stream activations read through the forward layer: at the last token, or averaged over tokens.

Used by S1 (steering directions), S4 (concept probes), S5 (lens readings) and S6 (counterfactual shift). Last-token
reads run the tokens all texts share once (`shared_prefix=True`, see `shared_prefix`): the same numbers up to
float rounding, in about half the time on short texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .devices import gather_cpu
from .forward import forward, last_logits, length_batches, stop_after
from .hooks import capture, last_position
from .shared_prefix import SharedPrefix
from .tokens import PromptFormat, encode, pad_id


def _split(model: Any, ids: Sequence[Sequence[int]], shared: bool) \
        -> tuple[Sequence[Sequence[int]], SharedPrefix | None]:
    """(the tokens each forward runs, their cached shared opening or None)."""
    prefix = SharedPrefix.of(model, ids) if shared else None
    return (prefix.strip(ids), prefix) if prefix is not None else (ids, None)


def last_resid(model: Any, texts: Sequence[str], layers: Sequence[int], kind: str = "resid_pre",
               fmt: PromptFormat = PromptFormat(), batch_size: int = 8, shared_prefix: bool = True) \
        -> Float[Tensor, "layer n d_model"]:
    """Residual at the last token of each prompt, at each layer (`blocks.{L}.hook_{kind}`), without gradients."""
    ids, prefix = _split(model, [encode(model.tokenizer, t, fmt) for t in texts], shared_prefix)
    names = [model.hook_name(la, kind) for la in layers]  # type: ignore[arg-type]
    out = torch.empty(len(layers), len(texts), model.d_model)
    for idx, batch in length_batches(ids, batch_size, pad_id(model.tokenizer)):
        got: dict[str, Tensor] = {}
        forward(model, batch, [(n, capture(got, n, last_position)) for n in names],
                stop_at_layer=stop_after(model, layers), prefix=prefix)
        for j, n in enumerate(names):
            out[j, idx] = got[n]
    return out


def contrast_shift(model: Any, negative: Sequence[str], positive: Sequence[str], layers: Sequence[int],
                   fmt: PromptFormat = PromptFormat(), batch_size: int = 8, shared_prefix: bool = True) \
        -> tuple[Float[Tensor, "layer d_model"], Float[Tensor, " layer"]]:
    """(mean last-token residual of `negative` - that of `positive`, the mean residual norm over both), per layer
    (`resid_pre`): a contrast set's axis in the model (S1's concept direction, `concept_size`)."""
    neg = last_resid(model, negative, layers, fmt=fmt, batch_size=batch_size, shared_prefix=shared_prefix)
    pos = last_resid(model, positive, layers, fmt=fmt, batch_size=batch_size, shared_prefix=shared_prefix)
    return neg.mean(1) - pos.mean(1), torch.cat([neg, pos], dim=1).norm(dim=-1).mean(1)


def collect(model: Any, ids: Sequence[Sequence[int]], layers: Sequence[int], position: str = "last",
            batch_size: int = 16, choices: Sequence[tuple[int, int]] | None = None, shared_prefix: bool = True) \
        -> tuple[Float[Tensor, "n layer d_model"], Float[Tensor, "n 2"] | None]:
    """Residual after each layer (`hook_resid_post`) at the last token or averaged over real tokens, and,
    given each text's two answer tokens, their final logits. Hooks live only inside each forward call.
    shared_prefix applies to last-token reads (a mean needs every position's activation)."""
    names = [model.hook_name(layer, "resid_post") for layer in layers]
    n_texts = len(ids)
    ids, prefix = _split(model, ids, shared_prefix and position == "last")
    acts = torch.empty(n_texts, len(layers), model.d_model)
    logits = torch.empty(n_texts, 2) if choices is not None else None
    for idx, batch in length_batches(ids, batch_size, pad_id(model.tokenizer)):
        got: dict[int, Tensor] = {}
        take = last_position if position == "last" else real_mean(batch.attention_mask[:, :, None].float())
        out = last_logits(model, batch, [(n, capture(got, j, take)) for j, n in enumerate(names)], prefix=prefix)
        acts[idx] = torch.stack([got[j] for j in range(len(names))], 1)
        if logits is not None and choices is not None:
            logits[idx] = gather_cpu(out, [choices[i] for i in idx])
    return acts, logits


def real_mean(mask: Float[Tensor, "batch pos 1"]) -> Callable[[Tensor], Tensor]:
    """`capture`'s take: the activation averaged over real (mask = 1) positions, detached, in float32, on the CPU
    (the mask follows the activation's device)."""

    def take(act: Tensor) -> Tensor:
        on = mask.to(act.device)
        return ((act.detach().float() * on).sum(1) / on.sum(1)).cpu()

    return take
