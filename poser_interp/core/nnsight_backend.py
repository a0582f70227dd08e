"""The nnsight backend: the same scoring and residual interventions, on large or remote models.

`NNsightModel` wraps an nnsight `TransformersModel` around a plain Hugging Face model loaded from the
same `ModelSpec` as the TL bridge (a separate copy, so parity tests compare two independent
paths). With `remote=True` the model runs on NDIF: the model is named by its Hugging Face repo id,
and the API key comes from the environment variable `NDIF_API_KEY`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import BackendError, LayerError
from .models import ModelSpec, load_hf
from .scoring import Items, Prepared, prepare, score_prepared
from .tokens import Batch, PromptFormat, pad_id

API_KEY_ENV = "NDIF_API_KEY"


class NNsightModel:
    """An nnsight TransformersModel with the toolkit's tokenization and answer scoring."""

    def __init__(self, spec: ModelSpec | str = "smollm2", remote: bool = False, repo_id: str | None = None):
        from nnsight import TransformersModel

        self.spec = ModelSpec(name=spec) if isinstance(spec, str) else spec
        self.remote = remote
        if remote:
            if not repo_id:
                raise BackendError("remote execution needs `repo_id`, the Hugging Face id NDIF serves "
                                   "(e.g. 'meta-llama/Llama-3.1-8B-Instruct'); local weights are not uploaded")
            if not os.environ.get(API_KEY_ENV):
                raise BackendError(f"remote execution needs an NDIF API key in ${API_KEY_ENV} "
                                   "(get one at https://login.ndif.us)")
            from nnsight import CONFIG

            CONFIG.set_default_api_key(os.environ[API_KEY_ENV])
            self.lm = TransformersModel(repo_id, task="text-generation", dispatch=False)
            self.tokenizer = self.lm.tokenizer
        else:
            hf, tok = load_hf(self.spec)
            self.lm = TransformersModel(hf, tokenizer=tok)
            self.tokenizer = tok
        self.n_layers = int(self.lm.config.num_hidden_layers)

    def answer_logits(self, items: Items, choices: Sequence[str] | Sequence[Sequence[str]] | None = None,
                      fmt: PromptFormat = PromptFormat(), batch_size: int = 8,
                      residual_add: tuple[int, Float[Tensor, " d_model"]] | None = None,
                      prepared: Prepared | None = None) -> Float[Tensor, "n 2"]:
        """Same contract as `scoring.answer_logits`; `residual_add=(layer, v)` adds v to layer's input."""
        if residual_add is not None and not 0 <= residual_add[0] < self.n_layers:
            raise LayerError(f"layer {residual_add[0]} is out of range: the model has layers 0..{self.n_layers - 1}")
        prep = prepared if prepared is not None else prepare(self.tokenizer, items, choices, fmt)
        return score_prepared(prep, lambda batch: self._last_logits(batch, residual_add), pad_id(self.tokenizer),
                              batch_size)

    def answer_probs(self, *args: Any, **kwargs: Any) -> Float[Tensor, "n 2"]:
        return self.answer_logits(*args, **kwargs).softmax(-1)

    def _last_logits(self, batch: Any, residual_add: tuple[int, Tensor] | None) -> Tensor:
        try:
            with torch.no_grad(), self.lm.trace(trace_inputs(batch), logits_to_keep=1, remote=self.remote):
                if residual_add is not None:
                    layer, vec = residual_add
                    block = decoder_blocks(self.lm)[layer]
                    block.input = block.input + vec
                saved = self.lm.lm_head.output[:, -1, :].save()
        except (ConnectionError, OSError, TimeoutError) as e:
            where = "NDIF" if self.remote else "the local model"
            raise BackendError(f"nnsight could not run on {where}: {e}. Check the network and ${API_KEY_ENV}, "
                               "or run locally with remote=False") from e
        except Exception as e:  # nnsight's deferred execution gives cryptic tracebacks: say what failed
            raise BackendError(f"nnsight trace failed ({type(e).__name__}: {str(e)[:300]}); "
                               "check the layer index and the vector's shape (d_model)") from e
        return saved_value(saved)


def decoder_blocks(lm: Any) -> Any:
    """The decoder layers of an nnsight-wrapped causal LM (Llama/Qwen-style `model.layers`, GPT-style `h`)."""
    inner = lm.model if hasattr(lm, "model") else lm.transformer
    return inner.layers if hasattr(inner, "layers") else inner.h


def trace_inputs(batch: Batch) -> dict[str, Tensor]:
    """A left-padded batch as the keyword inputs of an nnsight trace."""
    return dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)


def saved_value(saved: Any) -> Tensor:
    """The tensor behind a value saved in a trace (nnsight versions differ: a proxy with `.value`, or the tensor)."""
    return saved.value if hasattr(saved, "value") else saved
