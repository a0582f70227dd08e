"""A hooked model on nnsight: what strategies use of `HookedModel`, its forward passes run as nnsight traces.

`NNsightHooked` has the `HookedModel` surface strategies read (`n_layers`, `d_model`, `n_heads`, `tokenizer`, `spec`,
`hook_name`, `check_layer`, `hf_model`) and `core.forward.forward` hands it every forward pass: the same TL hook
functions are applied, inside one trace, to the same sites of the Hugging Face module tree:

  hook_embed                     output of the token embedding (S6 saliency's leaf)
  blocks.{L}.hook_resid_pre      input of decoder layer L
  blocks.{L}.attn.hook_pattern   attention weights of layer L (read only; eager attention; padded query rows zeroed, as
                                 the bridge has them)
  blocks.{L}.hook_resid_post     output of decoder layer L

Other hook names are refused naming these. Gradients (S6 saliency) use nnsight's own backward trace
(`embed_gradient`). With `remote=True` the traces run on NDIF: the model is named by its hub id, the key comes from
$NDIF_API_KEY, and the toolkit's code that a trace calls (hook functions, S2's noise draws) is shipped by value
(`nnsight.register`), so tensors that can be made on the server are made there. A hook's side effects (a capture
storing into the caller's dict) happen on the server, out of reach: after a remote trace each hook is run again
here on the saved activation it saw, which repeats its side effects exactly (its result is not used twice).
`remote="local"` is nnsight's local simulation of NDIF (the trace is serialized and run with the toolkit's modules
hidden), used by tests.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import BackendError, LayerError, ModelLoadError
from .models import ModelSpec, load_hf, resid_hook_name
from .tokens import Batch

API_KEY_ENV = "NDIF_API_KEY"
Remote = bool | Literal["local"]
SITES = ("hook_embed", "blocks.{L}.hook_resid_pre", "blocks.{L}.attn.hook_pattern", "blocks.{L}.hook_resid_post")
_SITE = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|attn\.hook_pattern|hook_resid_post)$")
_ORDER = {"hook_resid_pre": 1, "attn.hook_pattern": 2, "hook_resid_post": 3}


@dataclass(frozen=True)
class Site:
    """Where a hook acts, in forward order: (layer, rank) sorts embed < resid_pre < pattern < resid_post."""

    name: str
    layer: int
    kind: str

    @property
    def order(self) -> tuple[int, int]:
        return (self.layer, _ORDER.get(self.kind, 0))


@dataclass(frozen=True)
class HookPoint:
    """What a TL hook function gets as its `hook` argument (hooks here read `.name` at most)."""

    name: str


def site_of(name: str, n_layers: int) -> Site:
    """The site of a TL hook name, or BackendError naming the sites nnsight serves."""
    if name == "hook_embed":
        return Site(name, -1, "hook_embed")
    m = _SITE.match(name)
    if m is None or int(m.group(1)) >= n_layers:
        raise BackendError(f"hook point {name!r} is not served on --backend nnsight (sites: {', '.join(SITES)}, "
                           f"L < {n_layers}); run this analysis with --backend tl")
    return Site(name, int(m.group(1)), m.group(2))


def remote_problem(spec: ModelSpec, remote: Remote) -> str | None:
    """Why `spec` cannot run on NDIF (one line naming the fix), or None."""
    if remote is not True:
        return None
    from .hub import is_hub_name

    if not is_hub_name(spec.name) or spec.adapter:
        return (f"--remote runs hub models only (NDIF serves hub:ORG/NAME ids; local weights are never uploaded): "
                f"{spec.describe()} is not one; drop --remote to run it here")
    if not os.environ.get(API_KEY_ENV):
        return f"--remote needs an NDIF API key in ${API_KEY_ENV} (get one at https://login.ndif.us); or drop --remote"
    return None


def decoder_layers(lm: Any) -> Any:
    """The decoder layers of an nnsight-wrapped causal LM (Llama/Qwen/Gemma-style `model.layers`)."""
    inner = lm.model if hasattr(lm, "model") else lm.transformer
    return inner.layers if hasattr(inner, "layers") else inner.h


def embedding(lm: Any) -> Any:
    inner = lm.model if hasattr(lm, "model") else lm.transformer
    return inner.embed_tokens if hasattr(inner, "embed_tokens") else inner.wte


@dataclass(frozen=True, eq=False)
class NNsightHooked:
    """An nnsight `TransformersModel` with the `HookedModel` surface strategies use (see the module docstring)."""

    lm: Any
    tokenizer: Any
    spec: ModelSpec
    load_seconds: float
    remote: Remote = False
    hf: Any = None
    """The local Hugging Face model nnsight wraps (None on NDIF)."""
    backend: str = "nnsight"

    @property
    def config(self) -> Any:
        return self.lm.config

    @property
    def n_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def n_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def hf_model(self) -> Any:
        """The local Hugging Face model (its weights: the lens readout, S2's views); none on NDIF."""
        if self.hf is None:
            raise BackendError("this analysis reads the model's weights here (e.g. the lens readout: final norm and "
                               "unembedding), and with --remote they stay on NDIF; run it without --remote")
        return self.hf

    @property
    def provenance(self) -> str:
        """What computed a row: 'nnsight', or 'nnsight-remote' (NDIF)."""
        return "nnsight-remote" if self.remote is True else "nnsight"

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise LayerError(f"layer {layer!r} is out of range: {self.spec.describe()} has layers "
                             f"0..{self.n_layers - 1}")
        return layer

    def hook_name(self, layer: int, kind: str = "resid_pre") -> str:
        name = resid_hook_name(self.check_layer(layer), kind)
        site_of(name, self.n_layers)
        return name

    def trace(self, batch: Batch, **kwargs: Any) -> Any:
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                  "position_ids": batch.position_ids}
        return self.lm.trace(inputs, remote=self.remote, **kwargs)

    def run(self, batch: Batch, hooks: Sequence[tuple[str, Any]] = (), *, stop_at_layer: int | None = None,
            start_at_layer: int | None = None, resid: Tensor | None = None, logits_to_keep: int | None = 1,
            grad: bool = False) -> Tensor:
        """`core.forward.forward` on nnsight: the logits (or, with stop_at_layer, the residual entering that block),
        with `hooks` applied at their sites. start_at_layer with `resid`: block start_at_layer's input is `resid`
        (the blocks below run and are discarded; a trace cannot cut them)."""
        sites = sorted(((site_of(n, self.n_layers), fn) for n, fn in hooks), key=lambda s: s[0].order)
        if start_at_layer is not None:
            self.check_layer(start_at_layer)
        if stop_at_layer is not None and not 1 <= stop_at_layer <= self.n_layers:
            raise LayerError(f"stop_at_layer={stop_at_layer}: pass 1..{self.n_layers}")
        if stop_at_layer is not None and any(s.layer >= stop_at_layer for s, _ in sites):
            raise LayerError(f"a hook is beyond stop_at_layer={stop_at_layer}")
        kwargs = {"logits_to_keep": logits_to_keep} if logits_to_keep is not None and stop_at_layer is None else {}
        mask = batch.attention_mask
        lm, layers, embed, seen = self.lm, decoder_layers(self.lm), embedding(self.lm), []
        if (start_at_layer is None) != (resid is None):
            raise ValueError("start_at_layer and resid go together")
        start = (start_at_layer, resid) if start_at_layer is not None and resid is not None else None
        with torch.enable_grad() if grad else torch.no_grad(), _explained(self, "forward"), \
                self.trace(batch, **kwargs) as tracer:
            done_start = False
            for site, fn in sites:
                if start is not None and not done_start and site.order >= (start[0], 1):
                    layers[start[0]].input = start[1].to(layers[start[0]].input.dtype)
                    done_start = True
                if site.kind == "hook_embed":
                    x = embed.output
                    seen.append(x.save())
                    embed.output = fn(x, HookPoint(site.name))
                elif site.kind == "hook_resid_pre":
                    x = layers[site.layer].input
                    seen.append(x.save())
                    layers[site.layer].input = fn(x, HookPoint(site.name))
                elif site.kind == "hook_resid_post":
                    x = layers[site.layer].output
                    seen.append(x.save())
                    layers[site.layer].output = fn(x, HookPoint(site.name))
                else:  # attention weights: read only (the layer's output is computed from them already)
                    x = layers[site.layer].self_attn.output[1] * mask[:, None, :, None].to(mask.device)
                    seen.append(x.save())
                    if fn(x, HookPoint(site.name)) is not x:
                        raise BackendError(f"{site.name}: attention patterns are read only on --backend nnsight (the "
                                           "layer's output is computed from them already); run this with --backend tl")
            if start is not None and not done_start:
                layers[start[0]].input = start[1].to(layers[start[0]].input.dtype)
            if stop_at_layer is not None:
                out = layers[stop_at_layer - 1].output.save()
                tracer.stop()
            else:
                out = lm.output.logits.save()
        if self.remote is not False:  # the hooks' side effects happened where the trace ran: repeat them here
            for (site, fn), x in zip(sites, seen, strict=True):
                fn(x, HookPoint(site.name))
        return out

    def embed_gradient(self, batch: Batch, target: Sequence[int]) -> Float[Tensor, "batch pos d_model"]:
        """d logit[target token] at the last position / d token embedding, per row, by nnsight's backward trace."""
        pick = torch.tensor(list(target))[:, None]
        embed = embedding(self.lm)
        with torch.enable_grad(), _explained(self, "gradient"), self.trace(batch, logits_to_keep=1):
            e = embed.output
            e.requires_grad_(True)
            logit = self.lm.output.logits[:, -1, :].gather(1, pick.to(e.device)).sum()
            with logit.backward():
                g = e.grad.save()
        return g.detach()


class _explained:
    """nnsight's deferred execution gives cryptic tracebacks (nnsight #369, #593): one line naming what failed."""

    def __init__(self, model: NNsightHooked, what: str):
        self.model, self.what = model, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, e: Any, tb: Any) -> None:
        if e is None or isinstance(e, BackendError | LayerError):
            return
        where = "NDIF" if self.model.remote is True else "the local model"
        if isinstance(e, ConnectionError | OSError | TimeoutError):
            raise BackendError(f"nnsight could not run on {where}: {e}. Check the network and ${API_KEY_ENV}, or run "
                               "without --remote") from e
        if isinstance(e, Exception):
            raise BackendError(f"nnsight {self.what} trace on {where} failed ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:300] if str(e) else ''}); run it with --backend tl to see "
                               "whether the analysis or the backend is at fault") from e


def load_nnsight(spec: ModelSpec | str = "smollm2", remote: Remote = False, device: str = "cpu",
                 **overrides: Any) -> NNsightHooked:
    """A hooked model on nnsight: local weights (`core.models.load_hf`, the bridge's exact numbers), or with
    `remote=True` a hub model served by NDIF (nothing downloaded but its config and tokenizer)."""
    from nnsight import TransformersModel

    spec = ModelSpec(name=spec, **overrides) if isinstance(spec, str) else spec
    problem = remote_problem(spec, remote)
    if problem:
        raise BackendError(problem)
    start = time.perf_counter()
    if remote is True:
        import nnsight
        from nnsight import CONFIG

        from .hub import parse_hub_name

        repo, revision = parse_hub_name(spec.name)
        CONFIG.set_default_api_key(os.environ[API_KEY_ENV])
        nnsight.register("poser_interp")  # hook functions and S2's noise draws run on the server
        try:
            lm = TransformersModel(repo, revision=revision, dispatch=False)
        except Exception as e:
            raise ModelLoadError(f"cannot open {repo} for NDIF: {type(e).__name__}: {str(e).splitlines()[0][:200]}; "
                                 "the config and tokenizer come from the hub (unset HF_HUB_OFFLINE)") from None
        tok = lm.tokenizer
    hf = None
    if remote is not True:
        hf, tok = load_hf(spec, device)
        lm = TransformersModel(hf, tokenizer=tok)
        if remote == "local":
            import nnsight

            nnsight.register("poser_interp")
    return NNsightHooked(lm=lm, tokenizer=tok, spec=spec, load_seconds=time.perf_counter() - start, remote=remote,
                         hf=hf)
