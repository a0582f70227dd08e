"""Where S2's forward passes run: the TL bridge (fast path and reference path) and nnsight.

An engine gives clean last-position logits with the residual entering chosen layers, and noised logits for a
noise tensor added at one layer's input; `noise.noise_values` does the rest, identically for every engine.
Tests check that all paths give the same numbers (1e-4) with the same noise. The noise comes as a draw (a function
making it from its seeds, `noise.noise_tensor`), called where the model runs: on NDIF inside the trace, so that no
noise tensor is uploaded.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.forward import forward, last_logits
from ..core.hooks import add_tensor, capture
from ..core.nnsight_backend import decoder_blocks, saved_value, trace_inputs
from ..core.precision import AUTOCAST_TYPES
from ..core.tokens import Batch
from ..errors import BackendError, LayerError
from .noise_views import LastPosition, suffix_view

Noise = Float[Tensor, "rows pos d_model"] | Callable[[], Tensor]
"""The noise of a noised pass, or a function drawing it (from seeds: where the model runs)."""


class NoiseEngine(Protocol):
    """Clean and noised forward passes of one model; `noise_values` does the rest, whatever the backend."""

    tokenizer: Any
    d_model: int

    def check_layer(self, layer: int) -> int: ...

    def clean(self, batch: Batch, layers: Sequence[int]) \
            -> tuple[Float[Tensor, "batch vocab"], dict[int, Float[Tensor, "batch pos d_model"]]]:
        """Last-position logits and the residual entering each layer, without noise."""
        ...

    def prefix(self, batch: Batch, layer: int, last_only: bool = False) -> Any:
        """What this engine reuses across the noised passes of a batch (sliceable by rows), or None.

        last_only: the noise will touch only the last position (the clean states of the others can be reused).
        """
        ...

    def noisy(self, batch: Batch, layer: int, prefix: Any, noise: Noise, reps: int) -> Float[Tensor, "rows vocab"]:
        """Last-position logits with `noise` added at `layer`'s input; each batch row repeated `reps` times."""
        ...


def repeat_rows(batch: Batch, reps: int) -> Batch:
    """Each row `reps` times in a row (row order: prompt, then its scales x samples)."""
    return Batch(batch.input_ids.repeat_interleave(reps, 0), batch.attention_mask.repeat_interleave(reps, 0),
                 batch.position_ids.repeat_interleave(reps, 0))


class BridgeEngine:
    """The TransformerLens bridge (the reference) with a fast path for the noised passes.

    fast=True: the clean residual entering layer L comes from a bridge run that stops at L (`stop_at_layer`),
    once per prompt; the noised copies then run through layers L.. only, on a *plain view* of the model: the
    same module tree and weights with every bridge component replaced by the Hugging Face module it wraps,
    its decoder stack sliced to L.., SDPA attention, and the residual passed as `inputs_embeds`. Nothing of
    the bridge is modified. (The bridge's own `start_at_layer` is not used: it still runs layers 0..L-1.)
    fast=False: one full bridge forward per row, with a hook adding the noise at `blocks.L.hook_resid_pre`.
    """

    def __init__(self, model: Any, fast: bool = True, attention: str = "sdpa"):
        self.model = model
        self.tokenizer = model.tokenizer
        self.d_model = model.d_model
        self.fast = fast
        self.attention = attention
        self._views: dict[int, Any] = {}
        self._checked = not fast

    def check_layer(self, layer: int) -> int:
        return int(self.model.check_layer(layer))

    def clean(self, batch: Batch, layers: Sequence[int]) -> tuple[Tensor, dict[int, Tensor]]:
        resid: dict[int, Tensor] = {}
        logits = last_logits(self.model, batch, [(self.model.hook_name(la), capture(resid, la)) for la in layers])
        if not self._checked:
            self._verify(batch, layers[0], resid[layers[0]], logits)
        return logits, resid

    def prefix(self, batch: Batch, layer: int, last_only: bool = False) -> Tensor | LastPosition | None:
        if not self.fast:
            return None
        if last_only:
            return self._last_position(batch, layer)
        return forward(self.model, batch, stop_at_layer=layer, logits_to_keep=None)

    def noisy(self, batch: Batch, layer: int, prefix: Tensor | LastPosition | None, noise: Noise,
              reps: int) -> Tensor:
        noise = noise() if callable(noise) else noise
        rep = repeat_rows(batch, reps)
        if self.fast and isinstance(prefix, LastPosition):  # the noise (drawn on the CPU) joins the residual
            return self.last_suffix(rep, layer, prefix.resid.repeat_interleave(reps, 0)
                                    + noise[:, -1:].to(prefix.resid.device), prefix.repeated_cache(reps))
        if self.fast and isinstance(prefix, Tensor):
            return self.suffix(rep, layer, prefix.repeat_interleave(reps, 0) + noise.to(prefix.device))
        return last_logits(self.model, rep, [(self.model.hook_name(layer), add_tensor(noise))])

    def _last_position(self, batch: Batch, layer: int) -> LastPosition:
        """One clean forward of the prompt (plain view) giving the keys and values of every position but the last
        at every layer, and the residual entering `layer` at the last position. Every noised sample then costs
        one token through layers `layer`.."""
        from transformers import DynamicCache

        view = self._view(0)
        stack = getattr(view, getattr(view, "base_model_prefix", "model"))
        cache, seen = DynamicCache(config=view.config), {}

        def grab(module: Any, args: tuple, kwargs: dict) -> None:
            seen["x"] = (args[0] if args else kwargs["hidden_states"])[:, -1:]

        handle = stack.layers[layer].register_forward_pre_hook(grab, with_kwargs=True)  # the view's own module
        batch = batch.to(self.model.device)
        try:
            with torch.no_grad():
                view(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                     cache=cache, use_cache=True, logits_to_keep=1)
        finally:
            handle.remove()
        cache.crop(-1)
        return LastPosition(seen["x"], cache)

    def last_suffix(self, batch: Batch, layer: int, resid: Float[Tensor, "batch 1 d_model"], cache: Any) \
            -> Float[Tensor, "batch vocab"]:
        """Logits of the last position when only it is noised: layers `layer`.. on one token per row, attending
        to the clean keys and values of the other positions (noise at the last token cannot reach them)."""
        batch = batch.to(self.model.device)
        with torch.no_grad():
            out = self._view(layer)(inputs_embeds=resid, attention_mask=batch.attention_mask,
                                    position_ids=batch.position_ids[:, -1:], cache=cache, use_cache=True,
                                    logits_to_keep=1)
        return out.logits[:, -1, :]

    def _view(self, layer: int) -> Any:
        if layer not in self._views:
            self._views[layer] = suffix_view(self.model.hf_model, layer, self.attention)
        return self._views[layer]

    def suffix(self, batch: Batch, layer: int, resid: Float[Tensor, "batch pos d_model"]) \
            -> Float[Tensor, "batch vocab"]:
        """Last-position logits of layers `layer`.. run on a given residual (the layers before are skipped)."""
        batch = batch.to(self.model.device)
        with torch.no_grad():
            out = self._view(layer)(inputs_embeds=resid, attention_mask=batch.attention_mask,
                                    position_ids=batch.position_ids, logits_to_keep=1)
        return out.logits[:, -1, :]

    def _verify(self, batch: Batch, layer: int, resid: Tensor, logits: Tensor) -> None:
        """An architecture that transforms `inputs_embeds` (Gemma scales them), has no `layers` stack or caches
        keys differently would make the fast paths wrong; the first batch checks both against the bridge (without
        noise), with a fallback."""
        self._checked = True
        rows = take_rows(batch, 0, 2)  # two rows suffice to catch a systematic mismatch
        logits = logits[:2]
        try:
            gap = float((self.suffix(rows, layer, resid[:2]) - logits).abs().max())
            last = self._last_position(rows, layer)
            gap = max(gap, float((self.last_suffix(rows, layer, last.resid, last.cache) - logits).abs().max()))
        except (AttributeError, TypeError, ValueError, KeyError) as e:
            gap, why = math.inf, f"{type(e).__name__}: {e}"
        else:
            why = f"max logit gap {gap:.2g}"
        # bf16 autocast (`core.precision`) rounds the two paths' products differently: ~0.4% of the largest logit
        # measured; a wrong architecture is off by far more than either tolerance
        tolerance = 3e-2 if any(torch.is_autocast_enabled(kind) for kind in AUTOCAST_TYPES) else 1e-3
        if not gap <= tolerance * max(1.0, float(logits.abs().max())):
            warnings.warn(f"noise fast path does not reproduce the bridge on {self.model.spec.describe()} ({why}); "
                          "using the slower full-forward path", stacklevel=2)
            self.fast = False


class NNsightEngine:
    """The nnsight backend (`NNsightModel`, or `NNsightHooked` of `--backend nnsight`): full forwards, the noise drawn
    and added inside the trace (on NDIF: on the server, from its seeds)."""

    def __init__(self, nn_model: Any):
        self.nn = nn_model
        self.tokenizer = nn_model.tokenizer
        self.d_model = int(nn_model.lm.config.hidden_size)

    def check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.nn.n_layers:
            raise LayerError(f"layer {layer} is out of range: the model has layers 0..{self.nn.n_layers - 1}")
        return layer

    def clean(self, batch: Batch, layers: Sequence[int]) -> tuple[Tensor, dict[int, Tensor]]:
        blocks, saved = decoder_blocks(self.nn.lm), {}
        try:
            with torch.no_grad(), self.nn.lm.trace(trace_inputs(batch), logits_to_keep=1, remote=self.nn.remote):
                for layer in layers:
                    saved[layer] = blocks[layer].input.save()
                logits = self.nn.lm.lm_head.output[:, -1, :].save()
        except Exception as e:  # nnsight's deferred execution gives cryptic tracebacks: say what failed
            raise BackendError(f"nnsight clean trace failed ({type(e).__name__}: {str(e)[:300]})") from e
        return saved_value(logits), {k: saved_value(v) for k, v in saved.items()}

    def prefix(self, batch: Batch, layer: int, last_only: bool = False) -> None:
        return None

    def noisy(self, batch: Batch, layer: int, prefix: Tensor | None, noise: Noise, reps: int) -> Tensor:
        block, lm = decoder_blocks(self.nn.lm)[layer], self.nn.lm
        try:
            with torch.no_grad(), lm.trace(trace_inputs(repeat_rows(batch, reps)), logits_to_keep=1,
                                           remote=self.nn.remote):
                x = block.input
                drawn = noise() if callable(noise) else noise
                block.input = x + drawn.to(x.device, x.dtype)
                logits = lm.lm_head.output[:, -1, :].save()
        except Exception as e:
            raise BackendError(f"nnsight noised trace failed ({type(e).__name__}: {str(e)[:300]}); the noise must "
                               f"have the shape (rows, pos, d_model) of {reps} x {len(batch)} rows") from e
        return saved_value(logits)


def take_rows(batch: Batch, start: int, stop: int) -> Batch:
    """Rows start..stop of a batch."""
    return Batch(batch.input_ids[start:stop], batch.attention_mask[start:stop], batch.position_ids[start:stop])
