"""The logit-lens readout and the tuned lens (Belrose et al. 2023), fitted cheaply on CPU and cached.

`Readout` is the model's own final norm and unembedding (the Hugging Face modules the bridge wraps), so the
logit lens at the last layer is exactly the model's output. A tuned lens adds, per layer, an affine translator
h -> h + W h + b before that readout (identity at the last layer). Here it is fitted in two cheap stages on the
model's own activations at a few sampled positions of project-written text (scenario renderings from the
project's generator, with a seed of its own; nothing is downloaded):
1. closed form: ridge regression of the last layer's residual on each layer's residual;
2. `kl_steps` Adam steps on the KL divergence from the final distribution (full vocabulary), as in the paper.
Per-layer KL to the final distribution, on held-out texts, is stored for the tuned and the logit lens.
Fitted lenses are cached in the user cache dir under a key of the model (base, seed, adapter hash) and this
config, so each model is fitted once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..data.generator import GeneratorConfig, generate
from .forward import forward
from .hooks import capture
from .models import cache_dir, file_sha256
from .precision import in_fp32
from .seeds import stable_seed
from .tokens import PromptFormat, encode, pad_id, pad_left


@dataclass(frozen=True)
class TunedLensConfig:
    """How a tuned lens is fitted. Part of the cache key: any change refits."""

    texts: int = 64
    """Corpus size: scenario renderings from the project's generator (seed below), 1 in 4 held out."""
    positions: int = 32
    """Token positions sampled per text (after BOS), to keep activations small."""
    corpus_seed: int = 7919
    """Generator seed of the corpus (not the testbed's: the corpus is never a benchmark prompt set)."""
    ridge: float = 1e-2
    """Ridge penalty of the closed-form stage, relative to the mean feature variance."""
    kl_steps: int = 10
    """Adam steps on the KL divergence after the closed form (0: closed form only)."""
    lr: float = 1e-3
    """Adam learning rate of the KL stage."""
    batch_tokens: int = 32
    """Token positions per KL step."""
    heldout_tokens: int = 256
    """At most this many held-out positions for the KL report (each costs a full unembedding per layer)."""
    cache: bool = True
    """Read and write fitted lenses in the user cache dir."""


def _plain(module: Any) -> Any:
    """The Hugging Face module a TL bridge component wraps (the module itself otherwise): no hook points."""
    inner = getattr(module, "original_component", None)
    return inner if isinstance(inner, torch.nn.Module) else module


@dataclass(frozen=True, eq=False)
class Readout:
    """The model's final norm and unembedding, applied to any residual."""

    norm: Any
    weight: Float[Tensor, "vocab d_model"]
    bias: Float[Tensor, " vocab"] | None

    @classmethod
    def of(cls, model: Any) -> Readout:
        hf = model.hf_model
        base = getattr(hf, getattr(hf, "base_model_prefix", "model"))
        head = _plain(hf.get_output_embeddings())
        return cls(_plain(base.norm), head.weight.detach(), None if head.bias is None else head.bias.detach())

    def logits(self, h: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch vocab"]:
        """Logits of `h` (moved to the unembedding's device; the logits stay there)."""
        out = self.norm(h.to(self.weight.device)) @ self.weight.T
        return out if self.bias is None else out + self.bias

    def choice_logits(self, h: Float[Tensor, "n layer d_model"], choices: Int[Tensor, "n 2"]) \
            -> Float[Tensor, "n layer 2"]:
        """Logits of each prompt's two answer tokens at every layer (only those two unembedding rows), computed
        where the unembedding is, returned on the CPU."""
        h, choices = h.to(self.weight.device), choices.to(self.weight.device)
        with torch.no_grad():
            out = torch.einsum("nld,ncd->nlc", self.norm(h), self.weight[choices])
        return (out if self.bias is None else out + self.bias[choices][:, None, :]).cpu()


@dataclass(frozen=True, eq=False)
class TunedLens:
    """Per-layer affine translators h -> h + h @ weight[l].T + bias[l], and their held-out KL."""

    weight: Float[Tensor, "layer d_model d_model"]
    bias: Float[Tensor, "layer d_model"]
    kl_logit: Float[Tensor, " layer"]
    """Held-out KL(final || logit lens) per layer, in nats."""
    kl_tuned: Float[Tensor, " layer"]
    """Held-out KL(final || tuned lens) per layer, in nats."""

    def translate(self, h: Float[Tensor, "n layer d_model"]) -> Float[Tensor, "n layer d_model"]:
        return h + torch.einsum("nld,led->nle", h, self.weight) + self.bias


def corpus(config: TunedLensConfig) -> list[str]:
    """Project-written text for fitting: renderings of generated scenarios (good and poor oversight)."""
    gen = GeneratorConfig(seed=config.corpus_seed, n_train=config.texts, n_test=0, n_benchmark=0, n_heldout=0,
                          heldout_topics=0)
    return [s.render() for s in generate(gen)["train"]]


def _at(rows: list[int], cols: list[int]) -> Callable[[Tensor], Tensor]:
    """`capture`'s take: the activation at the given (row, position) pairs, detached, in float32."""
    return lambda act: act.detach().float()[rows, cols].cpu()


def sample_tokens(model: Any, ids: Sequence[Sequence[int]], k: int, seed: int, batch_size: int = 8) \
        -> Float[Tensor, "tokens layer d_model"]:
    """The residual after every layer at up to k sampled positions (never BOS) of each text."""
    names = [model.hook_name(layer, "resid_post") for layer in range(model.n_layers)]
    out: list[Tensor] = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        batch = pad_left(chunk, pad_id(model.tokenizer))
        width = batch.input_ids.shape[1]
        rows, cols = [], []
        for i, seq in enumerate(chunk):
            g = torch.Generator().manual_seed(stable_seed("lens-positions", seed, start + i))
            pos = torch.randperm(len(seq) - 1, generator=g)[:k] + 1 + width - len(seq)
            rows += [i] * len(pos)
            cols += pos.tolist()
        got: dict[int, Tensor] = {}
        forward(model, batch, [(n, capture(got, j, _at(rows, cols))) for j, n in enumerate(names)])
        out.append(torch.stack([got[j] for j in range(len(names))], 1))
    return torch.cat(out)


def kl_to_final(readout: Readout, h: Float[Tensor, "tokens layer d_model"], chunk: int = 128) \
        -> Float[Tensor, " layer"]:
    """Mean KL(final distribution || distribution read at each layer), in nats."""
    total = torch.zeros(h.shape[1])
    with torch.no_grad():
        for s in range(0, len(h), chunk):
            logp = readout.logits(h[s:s + chunk]).log_softmax(-1)
            final = logp[:, -1:]
            total += (final.exp() * (final - logp)).sum(-1).sum(0).cpu()
    return total / len(h)


def fit(model: Any, config: TunedLensConfig, texts: Sequence[str] | None = None) -> TunedLens:
    """Fit a tuned lens on `texts` (default: `corpus(config)`); 1 text in 4 is held out for the KL report."""
    texts = list(texts) if texts is not None else corpus(config)
    ids = [encode(model.tokenizer, t, PromptFormat(max_tokens=4096)) for t in texts]
    held = [i for i in range(len(ids)) if stable_seed("lens-heldout", config.corpus_seed, i) % 4 == 0]
    train = sorted(set(range(len(ids))) - set(held))
    h = sample_tokens(model, [ids[i] for i in train], config.positions, config.corpus_seed)
    h_held = sample_tokens(model, [ids[i] for i in held], config.positions, config.corpus_seed + 1)
    keep = torch.randperm(len(h_held), generator=torch.Generator().manual_seed(config.corpus_seed))
    h_held = h_held[keep[:config.heldout_tokens].sort().values]
    n_layers, d = h.shape[1], h.shape[2]
    weight, bias = torch.zeros(n_layers, d, d), torch.zeros(n_layers, d)
    target = h[:, -1]
    for la in range(n_layers - 1):  # closed form: ridge regression of (final - h_l) on [h_l, 1]
        x = torch.cat([h[:, la], torch.ones(len(h), 1)], 1).double()
        gram = x.T @ x
        reg = config.ridge * gram.diagonal()[:-1].mean() * torch.eye(d + 1, dtype=torch.float64)
        reg[-1, -1] = 0
        sol = torch.linalg.solve(gram + reg, x.T @ (target - h[:, la]).double()).float()
        weight[la], bias[la] = sol[:-1].T, sol[-1]
    readout = Readout.of(model)
    if config.kl_steps:
        _kl_steps(readout, h, weight, bias, config)
    lens = TunedLens(weight, bias, torch.zeros(n_layers), torch.zeros(n_layers))
    with torch.no_grad():
        translated = lens.translate(h_held)
    return TunedLens(weight, bias, kl_to_final(readout, h_held), kl_to_final(readout, translated))


def _kl_steps(readout: Readout, h: Tensor, weight: Tensor, bias: Tensor, config: TunedLensConfig) -> None:
    """Refine the translators of layers 0..L-2 in place by Adam on KL(final || tuned lens)."""
    w, b = weight[:-1].clone().requires_grad_(True), bias[:-1].clone().requires_grad_(True)
    opt = torch.optim.Adam([w, b], lr=config.lr)
    g = torch.Generator().manual_seed(config.corpus_seed)
    with torch.enable_grad():
        for _ in range(config.kl_steps):
            idx = torch.randint(len(h), (min(config.batch_tokens, len(h)),), generator=g)
            x = h[idx]
            with torch.no_grad():
                final = readout.logits(x[:, -1]).log_softmax(-1)[:, None]
            lens = x[:, :-1] + torch.einsum("nld,led->nle", x[:, :-1], w) + b
            logp = readout.logits(lens).log_softmax(-1)
            loss = (final.exp() * (final - logp)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    weight[:-1], bias[:-1] = w.detach(), b.detach()


def cache_key(model: Any, config: TunedLensConfig) -> str:
    """A key of the model's weights (base spec, adapter file hash) and the fit config."""
    spec = asdict(model.spec)
    if spec.get("adapter"):
        spec["adapter"] = file_sha256(Path(spec["adapter"]) / "adapter_model.safetensors")
    fields = {**asdict(config), "cache": None}
    blob = json.dumps({"spec": spec, "config": fields, "format": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


LENS_CACHE_ENV = "POSER_INTERP_LENS_CACHE"


def lens_cache_dir() -> Path:
    """Where fitted lenses are kept: $POSER_INTERP_LENS_CACHE, else `tuned_lens/` in the user cache dir
    ($POSER_INTERP_CACHE moves the whole cache, converted weights included)."""
    env = os.environ.get(LENS_CACHE_ENV)
    return Path(env) if env else cache_dir() / "tuned_lens"


@in_fp32
def tuned_lens_for(model: Any, config: TunedLensConfig = TunedLensConfig()) -> TunedLens:
    """The model's tuned lens: from the cache when there, else fitted (and cached when `config.cache`)."""
    path = lens_cache_dir() / f"{cache_key(model, config)}.pt"
    if config.cache and path.exists():
        return TunedLens(**torch.load(path, weights_only=True))
    lens = fit(model, config)
    if config.cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({k: getattr(lens, k) for k in ("weight", "bias", "kl_logit", "kl_tuned")}, tmp)
        tmp.replace(path)
    return lens
