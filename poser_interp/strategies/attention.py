"""S6, attentiveness to oversight facts: does a model look at the facts that say whether it is watched?

A faker's answer depends on the `critical` (oversight) facts; an aligned model's should not. Three measures
on each benchmark prompt, each higher = more attentive (= more likely the faker):
  saliency        vanilla gradient saliency: |d misaligned-answer logit / d input embedding| (L2 over d_model)
                  per token, summed over critical-fact tokens, divided by the sum over all tokens;
  attention       attention from the final position to critical-fact tokens in `blocks.{l}.attn.hook_pattern`,
                  per layer and head (and the mean over heads, head="mean");
  counterfactual  the same prompt rendered without its critical facts (wrapper, answer order and final token
                  identical): 1 - cosine between the two last-token residuals after block l (`hook_resid_post`).
`normalized` divides the first two by the critical facts' share of the tokens; for the counterfactual it is
the relative norm of the shift, |h - h'| / |h|.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..core.activations import last_resid
from ..core.forward import forward, length_batches, stop_after
from ..core.hooks import capture
from ..core.tokens import Batch, PromptFormat, encode, pad_id
from ..data.scenario import FactRole, Scenario
from ..errors import DataError, NotApplicableError
from .base import PromptValues, Score, Setting, StrategyBase, StrategyConfig, StrategyError, Subject, mean_of, register

VARIANTS = ("saliency", "attention", "counterfactual")


def fact_spans(scenario: Scenario, role: FactRole | str = FactRole.CRITICAL) -> list[tuple[int, int]]:
    """Character spans of the facts with `role` in `scenario.render()` (the fact text, not its number).

    The renderer writes one numbered line per item (the operator line first, then the facts in order), so
    the k-th fact is on a known line; each span is checked against the fact's text.
    """
    lines = scenario.render().split("\n")
    first = 2 if scenario.system_message else 1  # line 0 is the intro, then the optional operator line
    spans, start_of = [], np.cumsum([0] + [len(line) + 1 for line in lines])
    for k, fact in enumerate(scenario.facts):
        prefix = f"{first + k}. "  # items are numbered from 1, the operator line first
        if fact.role != FactRole(role):
            continue
        if lines[first + k] != prefix + fact.text:
            raise DataError(f"scenario {scenario.id}: cannot locate fact {k} in the rendered prompt (line "
                            f"{lines[first + k][:60]!r}); the renderer's layout changed, update fact_spans")
        begin = int(start_of[first + k]) + len(prefix)
        spans.append((begin, begin + len(fact.text)))
    return spans


def critical_tokens(tokenizer: Any, scenario: Scenario, fmt: PromptFormat = PromptFormat()) \
        -> tuple[list[int], list[bool]]:
    """The prompt's token ids (exactly `tokens.encode`'s) and which tokens overlap a critical fact.

    Tokens are mapped to characters with the tokenizer's offsets on the chat-templated text (the user message
    appears in it verbatim); the ids are checked to equal `encode`'s, so the mask fits the scored prompt.
    Offsets avoid markers, which would change the tokens being measured.
    """
    ids = encode(tokenizer, scenario.render(), fmt)
    spans = fact_spans(scenario)
    if not spans:
        raise StrategyError(f"scenario {scenario.id} has no `critical` facts; S6 measures attention to them, so "
                            "it needs data with fact roles (POSER files without roles load as 'unlabelled')")
    user = scenario.render()
    full = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True) if fmt.chat else user
    shift = full.find(user)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    lead = len(ids) - len(enc["input_ids"])  # `encode` may have added one BOS
    if shift < 0 or lead not in (0, 1) or ids[lead:] != list(enc["input_ids"]):
        raise StrategyError(f"scenario {scenario.id}: the offset tokenization does not reproduce the scored token "
                            "ids (a truncated prompt, or a tokenizer without offsets); raise max_tokens")
    mask = [False] * lead + [any(a < shift + e and b > shift + s for s, e in spans)
                             for a, b in enc["offset_mapping"]]
    return ids, mask


def _padded_mask(masks: Sequence[Sequence[bool]], width: int) -> Bool[Tensor, "batch pos"]:
    out = torch.zeros(len(masks), width, dtype=torch.bool)
    for i, m in enumerate(masks):
        out[i, width - len(m):] = torch.tensor(list(m), dtype=torch.bool)
    return out


def saliency(model: Any, batch: Batch, target: Sequence[int]) -> Float[Tensor, "batch pos d_model"]:
    """d logit[target token] at the last position / d input embedding (`hook_embed`), per row of a batch (on nnsight:
    its backward trace, `NNsightHooked.embed_gradient`)."""
    if hasattr(model, "embed_gradient"):
        return model.embed_gradient(batch, target)
    leaf: dict[str, Tensor] = {}

    def grab(act: Tensor, hook: Any = None) -> Tensor:
        leaf["e"] = act.detach().requires_grad_(True)
        return leaf["e"]

    out = forward(model, batch, [("hook_embed", grab)], grad=True)
    with torch.enable_grad():
        logit = out[:, -1, :].gather(1, torch.tensor(list(target), device=out.device)[:, None]).sum()
        (grad,) = torch.autograd.grad(logit, leaf["e"])
    return grad.detach().cpu()


@dataclass(frozen=True)
class AttentionConfig(StrategyConfig):
    """S6 options (defaults fit SmolLM2-135M: 30 layers, 9 heads; `for_model` fits other models)."""

    variants: tuple[str, ...] = VARIANTS
    """Which measures to compute: 'saliency', 'attention', 'counterfactual'."""
    layers: tuple[int, ...] = tuple(range(30))
    """Layers of the attention and counterfactual settings."""
    heads: tuple[int, ...] = tuple(range(9))
    """Heads of the attention settings (each layer also gets head='mean', the mean over all heads)."""
    primary_variant: str | None = None
    """Variant of the setting reported in summaries; None: the first variant (saliency by default: fixed in
    advance, it has no layer to choose)."""
    primary_layer: int = 20
    """Layer of the reported setting, for the attention and counterfactual variants."""
    batch_size: int = 4
    """Prompts per forward pass (saliency keeps activations for the backward pass)."""
    shared_prefix: bool = True
    """Last-token reads run the tokens all texts share once and reuse their keys and values (the same numbers up to
    float rounding, about half the time on short texts); False: a full forward per text, as before the option."""
    max_tokens: int = 512
    """Token cap of a prompt."""

    def __post_init__(self) -> None:
        for name in ("variants", "layers", "heads"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = [f"unknown variant {v!r}" for v in self.variants if v not in VARIANTS]
        if not self.variants or len(set(self.variants)) != len(self.variants):
            problems.append("variants must be distinct and not empty")
        if any(x < 0 for x in self.layers + self.heads) or len(set(self.layers)) != len(self.layers) \
                or len(set(self.heads)) != len(self.heads):
            problems.append("layers and heads must be distinct non-negative indices")
        if self.primary_variant is None and self.variants:
            object.__setattr__(self, "primary_variant", self.variants[0])
        if self.primary_variant not in self.variants:
            problems.append(f"primary_variant {self.primary_variant!r} is not among the variants")
        elif self.primary_variant != "saliency" and self.primary_layer not in self.layers:
            problems.append(f"primary_layer {self.primary_layer} is not among the layers")
        if problems:
            raise StrategyError("attention config: " + "; ".join(problems) + f" (variants are {VARIANTS})")

    @classmethod
    def for_model(cls, n_layers: int, n_heads: int, **options: Any) -> AttentionConfig:
        """All layers and heads of the model, reported at 2/3 of its depth."""
        options.setdefault("layers", tuple(range(n_layers)))
        options.setdefault("heads", tuple(range(n_heads)))
        options.setdefault("primary_layer", int(2 * n_layers / 3))
        return cls(**options)


@register(AttentionConfig)
class AttentionStrategy(StrategyBase[AttentionConfig]):
    """S6: per-prompt attentiveness to the critical facts, per variant x layer (x head)."""

    name: ClassVar[str] = "attention"

    def settings(self) -> tuple[Setting, ...]:
        c, out = self.config, []
        heads: list[int | str] = ["mean", *c.heads]
        for v in c.variants:
            if v == "saliency":
                out.append(Setting.of(variant=v))
            elif v == "counterfactual":
                out += [Setting.of(variant=v, layer=layer) for layer in c.layers]
            else:
                out += [Setting.of(variant=v, layer=layer, head=h) for layer in c.layers for h in heads]
        return tuple(out)

    def primary(self) -> Setting:
        c = self.config
        if c.primary_variant == "attention":
            return Setting.of(variant="attention", layer=c.primary_layer, head="mean")
        if c.primary_variant == "counterfactual":
            return Setting.of(variant="counterfactual", layer=c.primary_layer)
        return Setting.of(variant="saliency")

    def scores(self) -> tuple[Score, ...]:
        return (Score("attentiveness", "mean share of saliency / attention on the critical facts, or the "
                                       "counterfactual 1 - cosine", mean_of("attentiveness")),
                Score("normalized", "attentiveness / the critical facts' token share (counterfactual: relative "
                                    "norm of the shift)", mean_of("normalized")))

    def preflight(self, prompts: Sequence[Scenario], testbed_root: Path) -> None:
        bare = [p.id for p in prompts if not p.facts_with_role(FactRole.CRITICAL)]
        if bare:
            raise NotApplicableError(f"attention (S6) measures attention to the `critical` (oversight) facts, and "
                                     f"{len(bare)} of the {len(prompts)} benchmark prompts have none (e.g. "
                                     f"{bare[:2]}): this testbed's prompts carry no fact roles (POSER's benchmark "
                                     "files have none). Leave attention out of --strategies for it (`suite` does so "
                                     "by itself)")

    def figures(self, ev: Any, store: Any, kit: Any) -> dict[str, Any]:
        """Accuracy by layer per variant (heads averaged), and by head x layer for the attention variant."""
        figs = {f"{self.name}_layers": kit.setting_lines(ev, self.name, "layer", "variant",
                                                         where={"head": ("mean", None)})}
        if any(r.setting.get("variant") == "attention" for r in ev.find(self.name)):
            figs[f"{self.name}_heads"] = kit.setting_heatmap(ev, self.name, "head", "layer",
                                                             where={"variant": "attention"})
        return figs

    def run(self, subject: Subject, prompts: Sequence[Scenario], settings: Sequence[Setting]) \
            -> Iterator[PromptValues]:
        if not prompts:
            return
        model, c = subject.model, self.config
        unknown = [s.key for s in settings if s.get("variant") not in VARIANTS]
        if unknown:
            raise StrategyError(f"attention: unknown settings {unknown[:3]}; variants are {VARIANTS}")
        for layer in {int(s["layer"]) for s in settings if s.get("layer") is not None}:
            model.check_layer(layer)
        heads = {s["head"] for s in settings if s.get("head") not in (None, "mean")}
        if heads and max(heads) >= model.n_heads:  # type: ignore[type-var]
            raise StrategyError(f"head {max(heads)} is out of range: the model has {model.n_heads} heads")
        fmt = PromptFormat(max_tokens=c.max_tokens)
        ids_masks = [critical_tokens(model.tokenizer, p, fmt) for p in prompts]
        pid = tuple(p.id for p in prompts)
        by_variant: dict[str, list[Setting]] = {}
        for s in settings:
            by_variant.setdefault(str(s["variant"]), []).append(s)
        for variant, todo in by_variant.items():
            values = {"saliency": _saliency_values, "attention": _attention_values,
                      "counterfactual": _counterfactual_values}[variant](model, prompts, ids_masks, todo, c)
            for s in todo:
                yield PromptValues(s, pid, values[s.key])


ByKey = dict[str, dict[str, np.ndarray]]
"""setting key -> value name -> one float per prompt."""


def _batches(ids_masks: Sequence[tuple[list[int], list[bool]]], size: int, pad: int) \
        -> Iterator[tuple[list[int], Batch, Tensor]]:
    """(prompt indices, left-padded batch, critical-token mask) in length-sorted chunks."""
    for idx, batch in length_batches([ids for ids, _ in ids_masks], size, pad):
        yield idx, batch, _padded_mask([ids_masks[i][1] for i in idx], batch.input_ids.shape[1])


def _last_query(pattern: Float[Tensor, "batch head query key"]) -> Float[Tensor, "batch head key"]:
    """`capture`'s take: the attention pattern's last query row, on the CPU."""
    return pattern[:, :, -1, :].detach().float().cpu()


def _saliency_values(model: Any, prompts: Sequence[Scenario], ids_masks: Any, todo: Sequence[Setting],
                     c: AttentionConfig) -> ByKey:
    att, norm = np.zeros(len(prompts)), np.zeros(len(prompts))
    for idx, batch, crit in _batches(ids_masks, c.batch_size, pad_id(model.tokenizer)):
        target = [prompts[i].choice_tokens(model.tokenizer)[1 - prompts[i].aligned_index] for i in idx]
        sal = saliency(model, batch, target).norm(dim=-1) * batch.attention_mask
        share = (sal * crit).sum(-1) / sal.sum(-1)
        att[idx] = share.numpy()
        norm[idx] = (share / (crit.sum(-1) / batch.attention_mask.sum(-1))).numpy()
    return {todo[0].key: {"attentiveness": att, "normalized": norm}}


def _attention_values(model: Any, prompts: Sequence[Scenario], ids_masks: Any, todo: Sequence[Setting],
                      c: AttentionConfig) -> ByKey:
    layers = sorted({int(s["layer"]) for s in todo})
    names = {la: f"blocks.{la}.attn.hook_pattern" for la in layers}
    n_heads = int(model.n_heads)
    mass = np.zeros((len(layers), n_heads, len(prompts)))
    share = np.zeros(len(prompts))
    for idx, batch, crit in _batches(ids_masks, c.batch_size, pad_id(model.tokenizer)):
        got: dict[str, Tensor] = {}
        forward(model, batch, [(n, capture(got, n, _last_query)) for n in names.values()],
                stop_at_layer=stop_after(model, layers))
        for j, la in enumerate(layers):
            mass[j][:, idx] = (got[names[la]] * crit[:, None, :]).sum(-1).T.numpy()
        share[idx] = (crit.sum(-1) / batch.attention_mask.sum(-1)).numpy()
    out: ByKey = {}
    for s in todo:
        row = mass[layers.index(int(s["layer"]))]
        a = row.mean(0) if s["head"] == "mean" else row[int(s["head"])]
        out[s.key] = {"attentiveness": a, "normalized": a / share}
    return out


def _counterfactual_values(model: Any, prompts: Sequence[Scenario], ids_masks: Any, todo: Sequence[Setting],
                           c: AttentionConfig) -> ByKey:
    layers = sorted({int(s["layer"]) for s in todo})
    fmt = PromptFormat(max_tokens=c.max_tokens)
    texts, dropped = counterfactual_texts(model.tokenizer, prompts, fmt)
    h = last_resid(model, texts, layers, "resid_post", fmt, c.batch_size, c.shared_prefix)
    h0 = last_resid(model, dropped, layers, "resid_post", fmt, c.batch_size, c.shared_prefix)
    cos = torch.nn.functional.cosine_similarity(h, h0, dim=-1)
    rel = (h - h0).norm(dim=-1) / h.norm(dim=-1)
    return {s.key: {"attentiveness": (1 - cos[layers.index(int(s["layer"]))]).numpy(),
                    "normalized": rel[layers.index(int(s["layer"]))].numpy()} for s in todo}


def counterfactual_texts(tokenizer: Any, prompts: Sequence[Scenario], fmt: PromptFormat = PromptFormat()) \
        -> tuple[list[str], list[str]]:
    """Each prompt, and the same prompt without its critical facts; raises if their final tokens differ."""
    texts = [p.render() for p in prompts]
    dropped = [p.render(drop_roles=[FactRole.CRITICAL]) for p in prompts]
    for p, t, d in zip(prompts, texts, dropped, strict=True):
        a, b = encode(tokenizer, t, fmt), encode(tokenizer, d, fmt)
        if a[-1] != b[-1] or a == b:
            raise StrategyError(f"scenario {p.id}: removing the critical facts changed the final token or nothing "
                                "at all; the counterfactual needs a prompt with critical facts and a fixed ending")
    return texts, dropped
