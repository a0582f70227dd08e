"""Tokenization: one BOS, chat template on/off, the length cap, left padding."""

from __future__ import annotations

import pytest

from poser_interp.core.tokens import PromptFormat, encode, encode_batch
from poser_interp.errors import PromptTooLongError


def test_single_bos_with_chat_template(tokenizer):
    ids = encode(tokenizer, "Pick one.")
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
    assert tokenizer.decode(ids).endswith("assistant\n")


def test_single_bos_without_chat(tokenizer):
    ids = encode(tokenizer, "Pick one.", PromptFormat(chat=False))
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids[1:]) == "Pick one."


def test_too_long_is_refused_with_the_fix(tokenizer):
    with pytest.raises(PromptTooLongError, match="max_tokens"):
        encode(tokenizer, "word " * 200, PromptFormat(max_tokens=64))


def test_truncation_keeps_bos_and_end(tokenizer):
    fmt = PromptFormat(max_tokens=32, on_long="truncate")
    with pytest.warns(UserWarning, match="truncated"):
        ids = encode(tokenizer, "word " * 200 + "final question?", fmt)
    assert len(ids) == 32 and ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids).endswith("assistant\n")


def test_left_padding_masks_and_positions(tokenizer):
    batch = encode_batch(tokenizer, ["short", "a much longer prompt with more words in it"])
    short = batch.attention_mask[0]
    n_pad = int((short == 0).sum())
    assert n_pad > 0 and short[:n_pad].sum() == 0 and short[n_pad:].all()
    assert batch.position_ids[0, n_pad] == 0 and batch.position_ids[0, -1] == short.sum() - 1
    assert batch.attention_mask[1].all()
