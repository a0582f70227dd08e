"""Tokens that every text of a read shares, run once: their keys and values reused by every batch.

The texts a strategy reads often open alike: S4's 504 concept statements share the chat template's 24-token system
header (of ~45 tokens each), a testbed's prompts share their first 47 (of ~166). `SharedPrefix.of` runs those tokens
once through the bridge and keeps the Hugging Face KV cache; `forward(..., prefix=p)` then runs only each text's own
tokens, attending to the cached ones. Measured on SmolLM2 (504 statements, 1 thread): 1.9x faster, residuals equal
to full forwards up to float rounding (relative difference ~6e-7).

Only for clean reads at the last position: hooks see the new tokens alone, so an intervention would miss the
prefix and a mean over tokens would miss its positions; callers that need either run full forwards.

TransformerLens 4.3's attention bridge takes the cache from a `past_key_values` (or `layer_past`) keyword, while
transformers 5.x decoder layers pass it as `cache`: without `cache_keyword` the bridge ignores the cache and
attends to the new tokens alone (measured: last-token logits off by 4.3, no error). `cache_keyword` hands the
cache on under the old name for the duration of a call.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .devices import input_device
from .tokens import Batch

MIN_SHARED = 8
"""Shorter shared openings are run with every text (the saving would not pay for the cache copies)."""


def shared_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all `seqs` share, leaving at least one token of each."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs) - 1
    for s in seqs[1:]:
        n = next((i for i in range(n) if s[i] != first[i]), n)
    return max(n, 0)


def repeated_cache(cache: Any, reps: int) -> Any:
    """A fresh copy of a Hugging Face cache with each row `reps` times (a forward extends the cache it is given)."""
    out = copy.deepcopy(cache)
    out.batch_repeat_interleave(reps)
    return out


def _windows_fit(config: Any, width: int) -> bool:
    """Whether no sliding-window layer's window (of a Hugging Face `config`) is shorter than `width` tokens: a
    window counts cache slots, and the padding between the prefix and a shorter text would push prefix tokens out."""
    window = getattr(config, "sliding_window", None)
    kinds = getattr(config, "layer_types", None) or ()
    slides = "sliding_attention" in kinds or bool(getattr(config, "use_sliding_window", False))
    return window is None or not slides or int(window) >= width


def _pass_cache_on(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
        kwargs = dict(kwargs, past_key_values=kwargs["cache"])
    return args, kwargs


@contextlib.contextmanager
def cache_keyword(model: Any) -> Iterator[None]:
    """For the calls inside: each attention bridge gets the decoder layer's `cache` as `past_key_values` too."""
    handles = [block.attn.register_forward_pre_hook(_pass_cache_on, with_kwargs=True) for block in model.bridge.blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class SharedPrefix:
    """The opening tokens `ids` of a set of texts and the model's KV cache of them (batch of one)."""

    ids: tuple[int, ...]
    cache: Any
    keyword: str = "cache"
    """The model's name for its cache argument."""

    @classmethod
    def of(cls, model: Any, seqs: Sequence[Sequence[int]], minimum: int = MIN_SHARED) -> SharedPrefix | None:
        """The shared opening of `seqs` run through `model` once; None when it is shorter than `minimum`, or the model
        runs on another backend than the TL bridge (nnsight runs whole texts: the same numbers up to float rounding)."""
        if getattr(model, "backend", "tl") != "tl":
            return None
        n = shared_length(seqs)
        if n < max(minimum, 1) or not _windows_fit(getattr(model.hf_model, "config", None), max(len(s) for s in seqs)):
            return None
        ids = tuple(seqs[0][:n])
        with torch.no_grad(), cache_keyword(model):
            _, cache = model.bridge(torch.tensor([ids], device=model.device), return_type="logits_and_cache")
        if cache is None or cache.get_seq_length() != n:
            raise RuntimeError(f"the model's KV cache holds {0 if cache is None else cache.get_seq_length()} tokens "
                               f"after a {n}-token prefix; read these texts with shared_prefix=False")
        keyword = "cache" if "cache" in inspect.signature(type(model.hf_model).forward).parameters else \
            "past_key_values"  # transformers 5.x renamed it (the old name still works, with a warning per call)
        return cls(ids, cache, keyword)

    @classmethod
    def of_hf(cls, hf_model: Any, seqs: Sequence[Sequence[int]], minimum: int = MIN_SHARED) -> SharedPrefix | None:
        """The same for a plain Hugging Face (or peft) causal LM read without hooks (`scoring.hf_score_prepared`):
        the cache lives where the model does."""
        n = shared_length(seqs)
        base = hf_model.get_base_model() if hasattr(hf_model, "get_base_model") else hf_model
        if n < max(minimum, 1) or not _windows_fit(getattr(base, "config", None), max(len(s) for s in seqs)):
            return None
        ids = tuple(seqs[0][:n])
        with torch.no_grad():
            out = hf_model(input_ids=torch.tensor([ids], device=input_device(hf_model)), use_cache=True,
                           logits_to_keep=1)
        cache = out["cache"] if "cache" in out else out.get("past_key_values")  # transformers 5.x renamed it
        if cache is None or cache.get_seq_length() != n:
            raise RuntimeError(f"the model's KV cache holds {0 if cache is None else cache.get_seq_length()} tokens "
                               f"after a {n}-token prefix; score these prompts with shared_prefix=False")
        keyword = "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"
        return cls(ids, cache, keyword)

    def __len__(self) -> int:
        return len(self.ids)

    def strip(self, seqs: Sequence[Sequence[int]]) -> list[list[int]]:
        """Each text's own tokens (after the shared opening, which each must start with)."""
        n = len(self.ids)
        if any(tuple(s[:n]) != self.ids or len(s) <= n for s in seqs):
            raise ValueError("every text must start with the shared prefix and go on after it")
        return [list(s[n:]) for s in seqs]

    def call_kwargs(self, batch: Batch) -> dict[str, Any]:
        """Bridge keywords for a left-padded batch of stripped texts: mask and positions after the prefix, and a
        fresh copy of the cache per row (the model extends the cache it is given)."""
        n, rows = len(self.ids), len(batch)
        mask = torch.cat([batch.attention_mask.new_ones((rows, n)), batch.attention_mask], dim=1)
        return {"attention_mask": mask, "position_ids": batch.position_ids + n,
                self.keyword: repeated_cache(self.cache, rows), "use_cache": True}
