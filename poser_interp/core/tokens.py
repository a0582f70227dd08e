"""Tokenization owned by the toolkit: chat template, one BOS, a length cap, left padding.

The TransformerBridge prepends BOS to strings; a chat template already starts with one. To avoid
silent BOS doubling every model call here goes through token ids built by `encode`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from ..data.prompt_style import current_style
from ..errors import DataError, PromptTooLongError


@dataclass(frozen=True)
class PromptFormat:
    """How text becomes token ids. Stored with results, so it reproduces them."""

    chat: bool = True
    """Wrap the text as a user turn with the tokenizer's chat template (and open the assistant turn)."""
    max_tokens: int = 512
    """Token cap per prompt; longer prompts follow `on_long` (memory grows fast with length on CPU)."""
    on_long: Literal["error", "truncate"] = "error"
    """'error' refuses a long prompt; 'truncate' keeps BOS plus the last tokens (the question), with a warning."""


def encode(tokenizer: Any, text: str, fmt: PromptFormat = PromptFormat()) -> list[int]:
    """Token ids of one prompt with exactly one leading BOS (when the tokenizer has one)."""
    if fmt.chat and current_style() == "chat":  # 'plain' and 'poser' prompts take no chat template
        if not getattr(tokenizer, "chat_template", None):
            raise DataError("this tokenizer has no chat template: choose --prompt-format plain (or poser for models "
                            "trained on POSER's prompts); in Python, PromptFormat(chat=False)")
        out = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
        ids = list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)
    else:
        ids = list(tokenizer.encode(text, add_special_tokens=False))
    bos = tokenizer.bos_token_id
    if bos is not None:
        while len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
        if not ids or ids[0] != bos:
            ids = [bos] + ids
    if len(ids) > fmt.max_tokens:
        if fmt.on_long == "error":
            raise PromptTooLongError(
                f"prompt has {len(ids)} tokens, over the cap of {fmt.max_tokens}: raise the cap (memory grows with "
                f"length): `--max-tokens {len(ids)}` on the command line, PromptFormat(max_tokens={len(ids)}) in "
                "Python; or, in Python, PromptFormat(on_long='truncate') keeps BOS and the last tokens. Prompt "
                f"starts: {text[:80]!r}"
            )
        warnings.warn(f"prompt truncated from {len(ids)} to {fmt.max_tokens} tokens (kept BOS and the end)",
                      stacklevel=2)
        head = ids[:1] if bos is not None else []
        ids = head + ids[len(ids) - (fmt.max_tokens - len(head)):]
    return ids


@dataclass(frozen=True)
class Batch:
    """Left-padded token ids, attention mask and position ids (positions count real tokens only)."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    position_ids: Int[Tensor, "batch pos"]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on `device` (a no-op where it already is)."""
        return Batch(input_ids=self.input_ids.to(device), attention_mask=self.attention_mask.to(device),
                     position_ids=self.position_ids.to(device))


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int) -> Batch:
    if not seqs:
        raise ValueError("cannot build a batch from zero prompts")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(input_ids=ids, attention_mask=mask, position_ids=pos)


def pad_id(tokenizer: Any) -> int:
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pid if pid is not None else 0)


def encode_batch(tokenizer: Any, texts: Sequence[str], fmt: PromptFormat = PromptFormat()) -> Batch:
    return pad_left([encode(tokenizer, t, fmt) for t in texts], pad_id(tokenizer))
