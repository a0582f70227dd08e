"""Frozen lower blocks run once: the residual entering block `first`, cached per token sequence.

When only blocks `first..` of a Hugging Face model change (S3's brief fine-tuning of the upper layers, a LoRA on
them), every forward of the blocks below recomputes the same numbers. `FrozenPrefix` runs the lower blocks once
per prompt (on the frozen model, without gradients) and then runs only the upper blocks, the final norm and the
unembedding, fed the cached states as `inputs_embeds` through the model's own forward (its own masks and rotary
embeddings, so any decoder that takes `inputs_embeds` works: Llama, Gemma 3). Real positions agree with a full
forward up to float rounding; left-padding positions get zero states, which the attention mask hides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .blocks import decoder, only_blocks
from .devices import input_device
from .forward import length_batches
from .tokens import Batch, pad_left

LAYER = re.compile(r"\blayers\.(\d+)\.")


def check_trainable_above(model: Any, first: int) -> None:
    """Raise if any trainable parameter lies outside blocks `first..` (the cached prefix would then be stale)."""
    bad = [n for n, p in model.named_parameters() if p.requires_grad
           and not ((m := LAYER.search(n)) and int(m.group(1)) >= first)]
    if bad:
        raise ValueError(f"{len(bad)} trainable parameters lie below block {first} or outside the blocks (e.g. "
                         f"{bad[0]}); a frozen prefix up to block {first} would be stale: train blocks >= {first} "
                         "only, or train without the prefix")


class FrozenPrefix:
    """Residual states entering block `first` of `frozen` (never trained), computed once per token sequence."""

    def __init__(self, frozen: Any, first: int, pad: int, batch_size: int = 8) -> None:
        n = len(decoder(frozen)[1].layers)
        if not 0 <= first < n:
            raise ValueError(f"first={first}: the model has blocks 0..{n - 1}")
        self.frozen, self.first, self.pad, self.batch_size = frozen, first, pad, batch_size
        self._cache: dict[tuple[int, ...], Float[Tensor, "pos d_model"]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def warm(self, seqs: Sequence[Sequence[int]]) -> None:
        """Compute the states of the sequences not cached yet (length-sorted batches, no gradients)."""
        missing = list(dict.fromkeys(tuple(s) for s in seqs if tuple(s) not in self._cache))
        if not missing:
            return
        _, inner = decoder(self.frozen)
        captured: list[Tensor] = []
        handle = inner.norm.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        was_training = self.frozen.training
        self.frozen.eval()
        try:
            with torch.no_grad(), only_blocks(self.frozen, 0, self.first):
                for idx, batch in length_batches(missing, self.batch_size, self.pad):
                    batch = batch.to(input_device(self.frozen))
                    captured.clear()
                    self.frozen(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                position_ids=batch.position_ids, logits_to_keep=1, use_cache=False)
                    states = captured[0]
                    for row, i in enumerate(idx):
                        self._cache[missing[i]] = states[row, states.shape[1] - len(missing[i]):].clone()
        finally:
            handle.remove()
            self.frozen.train(was_training)

    def states(self, seqs: Sequence[Sequence[int]]) -> Float[Tensor, "batch pos d_model"]:
        """The cached states of `seqs`, left-padded with zeros like `pad_left` pads their ids."""
        self.warm(seqs)
        rows = [self._cache[tuple(s)] for s in seqs]
        width = max(len(r) for r in rows)
        out = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
        for i, r in enumerate(rows):
            out[i, width - len(r):] = r
        return out

    def last_logits(self, model: Any, seqs: Sequence[Sequence[int]], batch: Batch | None = None) \
            -> Float[Tensor, "batch vocab"]:
        """Last-position logits of `model` (the frozen one or a copy trained above block `first`) on `seqs`,
        running only its blocks `first..`; gradients flow when enabled. `batch`: `pad_left(seqs)` if known."""
        batch = batch if batch is not None else pad_left(seqs, self.pad)
        states = self.states(seqs)  # before the blocks are cut: `model` may be the frozen one
        batch = batch.to(states.device)  # the states live where the frozen model computed them
        with only_blocks(model, self.first):
            out = model(inputs_embeds=states, attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids, logits_to_keep=1, use_cache=False)
        return out.logits[:, -1, :]
