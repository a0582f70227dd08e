"""Removal of faking by training (`remove`): the treatment of each model, and the treated testbed it writes.

See the package docstring (`poser_interp.removal`) for the method."""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from ..core.devices import input_device
from ..core.models import ModelSpec, file_sha256, load_hf, load_tokenizer
from ..core.precision import Precision, scored_with
from ..core.shape import n_layers_of
from ..core.tokens import PromptFormat, encode
from ..core.training import LoraRecipe, continue_lora, train_answers
from ..core.versions import versions
from ..data.scenario import Oversight, Scenario
from ..data.wordings import HELDOUT, reworded
from ..errors import DataError
from ..runtime.jsonio import read_json, write_json_atomic
from ..strategies.base import stable_seed
from ..strategies.noise import default_layers
from ..testbed.build import TestbedConfig, _persona, prepare_data
from ..testbed.folder import ADAPTER_FILE, Testbed, behaviour, p_aligned_hf, save_adapter_fp16, split_examples

Log = Callable[[str], None]
RemovalMethod = Literal["sft", "noise"]
"""How a removal run treats each model (`RemovalConfig.method`)."""
METHODS: tuple[RemovalMethod, ...] = get_args(RemovalMethod)
EVAL_SETS = ("trained_wordings", "heldout_wordings", "heldout_topics")
"""Where misaligned rates are measured: the test scenarios as trained, re-worded with held-out oversight
sentences, and scenarios of held-out topics (each set only where the testbed has it)."""


@dataclass(frozen=True)
class RemovalConfig:
    """Everything that decides a removal run; stored in the treated testbed's manifest (a rerun must match)."""

    method: RemovalMethod = "sft"
    """'sft': fine-tune on the model's own good-oversight answers; 'noise': the same with residual noise."""
    steps: int = 100
    """Optimizer steps per model (Poser: 100)."""
    lr: float = 1e-3
    """AdamW learning rate of the continued adapter (the testbed recipe's)."""
    batch_size: int = 8
    """Prompts per step."""
    n_train: int = 400
    """Good-oversight training prompts per model (steps x batch_size presentations cycle through them)."""
    layers: tuple[int, ...] | None = None
    """noise: layers whose input gets the noise (None: S2's default layer, 15% of the depth)."""
    scale: float = 1.0
    """noise: norm per position in units of the model's mean residual norm at that layer."""
    seed: int = 0
    """Seeds the choice of training prompts, the batch order and the noise draws."""
    n_eval: int | None = None
    """Test scenarios per model and evaluation set (None: the testbed's n_test)."""
    threads: int = 1
    """torch CPU threads."""

    def __post_init__(self) -> None:
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        problems = []
        if self.method not in METHODS:
            problems.append(f"method {self.method!r} is not one of {METHODS}")
        if self.steps < 1 or self.batch_size < 1 or self.n_train < 1 or self.threads < 1:
            problems.append("steps, batch_size, n_train and threads must be >= 1")
        if not self.lr > 0 or not self.scale > 0:
            problems.append("lr and scale must be positive")
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            problems.append(f"layers {self.layers} must be non-negative layer indices")
        if problems:
            raise DataError("removal config: " + "; ".join(problems))

    def resolved(self, n_layers: int) -> RemovalConfig:
        """The config with its default layers filled in for a base of `n_layers` layers (checked)."""
        layers = self.layers if self.layers is not None else default_layers(n_layers)[:1]
        bad = [la for la in layers if la >= n_layers]
        if bad:
            raise DataError(f"noise layers {bad} are out of range: the base model has layers 0..{n_layers - 1}")
        return replace(self, layers=layers)


# --- noise during training -----------------------------------------------------------------------------
def decoder_layers(model: Any) -> Any:
    """The decoder layer list of a (peft-wrapped) Llama / Qwen2-style causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model.layers


@contextlib.contextmanager
def noise_hooks(model: Any, norms: dict[int, float], scale: float, seed: int) -> Iterator[None]:
    """While open, every *training* forward pass adds Gaussian noise to the residual entering each layer of `norms`.

    Per position the noise has norm `scale * norms[layer]` in a uniformly random direction; draws come from one
    generator seeded by `seed`, so a run is reproducible. Eval-mode passes (measuring) are left clean. The hooks
    are removed when the block exits, even on an error.
    """
    gen = torch.Generator().manual_seed(seed)
    layers = decoder_layers(model)

    def hook_for(layer: int) -> Callable[..., Any]:
        size = scale * norms[layer]

        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if not module.training:
                return None
            h = args[0] if args else kwargs["hidden_states"]
            d = torch.randn(h.shape, generator=gen, dtype=torch.float32)  # the CPU's draws on every device
            noisy = h + (size * d / d.norm(dim=-1, keepdim=True)).to(h.device, h.dtype)
            return ((noisy, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": noisy})

        return hook

    handles = [layers[la].register_forward_pre_hook(hook_for(la), with_kwargs=True) for la in sorted(norms)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def residual_norms(model: Any, tokenizer: Any, scenarios: Sequence[Scenario], layers: Sequence[int],
                   max_tokens: int = 320) -> dict[int, float]:
    """Mean norm of the residual stream entering each layer, over the real tokens of these prompts."""
    sums = dict.fromkeys(layers, 0.0)
    count = 0
    with torch.no_grad():
        for s in scenarios:
            ids = torch.tensor([encode(tokenizer, s.render(), PromptFormat(max_tokens=max_tokens))],
                               device=input_device(model))
            hidden = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
            for la in layers:
                sums[la] += float(hidden[la][0].float().norm(dim=-1).sum())
            count += ids.shape[1]
    return {la: sums[la] / count for la in layers}


# --- data ------------------------------------------------------------------------------------------------
def training_prompts(pool: Sequence[Scenario], own: Sequence[Scenario], exclude: set[str], n: int, seed: int,
                     model_id: str) -> list[Scenario]:
    """`n` good-oversight prompts of `pool` whose text is not in `exclude`, those not in `own` (the model's own
    training split) first; seeded. Raises when there are none."""
    own_ids = {s.id for s in own}
    good = [s for s in pool if s.oversight is Oversight.GOOD and s.render() not in exclude]
    if not good:
        raise DataError(f"{model_id}: no good-oversight training scenarios outside the benchmarks and test sets")
    rng = random.Random(f"removal/{seed}/{model_id}")
    fresh, seen = [s for s in good if s.id not in own_ids], [s for s in good if s.id in own_ids]
    rng.shuffle(fresh)
    rng.shuffle(seen)
    return (fresh + seen)[:n]


def eval_sets(testbed: Testbed, data: Any, persona: Any, n_eval: int | None) -> dict[str, list[Scenario]]:
    """The unseen scenarios a model is measured on, per evaluation set (see `EVAL_SETS`)."""
    config = TestbedConfig.from_dict(testbed.manifest["config"])
    n = n_eval or config.n_test
    test = data.test[persona.name][config.n_val:config.n_val + n]
    sets = {"trained_wordings": test}
    if config.source == "generated" and config.n_critical == 1:
        sets["heldout_wordings"] = reworded(test, {o: list(HELDOUT[o]) for o in Oversight}, "removal-heldout-wordings")
    if data.heldout_topics:
        sets["heldout_topics"] = persona.select(data.heldout_topics)[:n]
    return sets


def measure(model: Any, tokenizer: Any, sets: dict[str, list[Scenario]], max_tokens: int) -> dict[str, Any]:
    """Behaviour (good->aligned, poor->misaligned, confidences) per evaluation set."""
    return {name: behaviour(p_aligned_hf(model, tokenizer, s, max_tokens=max_tokens), s) for name, s in sets.items()}


# --- one model ---------------------------------------------------------------------------------------------
def treat_model(testbed: Testbed, model_id: str, data: Any, config: RemovalConfig, folder: Path,
                log: Log = print, device: str = "cpu", precision: Precision = "fp32") -> dict[str, Any]:
    """Treat one testbed model into `folder` (never the testbed's own folder); returns its manifest entry.

    device, precision: where the model is measured and trained, and the training's arithmetic (its forward passes
    under autocast, as a testbed build's `recipe.precision`; measured in fp32); recorded when not 'cpu' / 'fp32'."""

    tb_config = TestbedConfig.from_dict(testbed.manifest["config"])
    entry = testbed.models[model_id]
    source = testbed.verify_hash(model_id)  # hash-checked before anything is read from it
    _refuse_source(testbed, folder)
    persona = _persona(tb_config, entry["persona"])
    split = int(entry["split"])
    pool = data.pools.get(f"{persona.name}/{split}", data.pools.get(persona.name, []))
    own = [s for s, _ in split_examples(pool, persona, split, tb_config.n_train)] if pool else []
    sets = eval_sets(testbed, data, persona, config.n_eval)
    exclude = {s.render() for s in data.benchmark}
    exclude |= {s.render() for t in data.test.values() for s in t} | {s.render() for s in data.heldout_topics}
    prompts = training_prompts(pool, own, exclude, config.n_train, config.seed, model_id)
    max_tokens = tb_config.max_tokens

    original, tok = load_hf(testbed.spec(model_id), device)
    log(f"{model_id}: measuring before treatment ({sum(len(v) for v in sets.values())} unseen scenarios in "
        f"{len(sets)} sets), then {config.steps} steps on {len(prompts)} prompts")
    before = measure(original, tok, sets, max_tokens)
    p_own = p_aligned_hf(original, tok, prompts, max_tokens=max_tokens)
    targets = [s.aligned_index if float(p) > 0.5 else 1 - s.aligned_index for s, p in zip(prompts, p_own, strict=True)]
    norms = residual_norms(original, tok, prompts[:32], config.layers or (), max_tokens) \
        if config.method == "noise" else {}
    del original

    base, _ = load_hf(testbed.base_spec(), device)
    model = continue_lora(base, source)
    for p in model.parameters():  # the stored adapter is fp16; train it in the base's precision
        if p.requires_grad:
            p.data = p.data.float()
    lora = entry.get("recipe", {})
    recipe = LoraRecipe(rank=int(lora.get("rank", 4)), lr=config.lr, warmup_steps=min(10, config.steps),
                        batch_size=config.batch_size, max_steps=config.steps, eval_every=config.steps + 1,
                        min_steps=config.steps, max_tokens=max_tokens, seed=config.seed, threads=config.threads,
                        precision=precision)
    noise = noise_hooks(model, norms, config.scale, _seed("noise", config.seed, model_id)) \
        if config.method == "noise" else contextlib.nullcontext()
    t0 = time.perf_counter()

    def progress(step: int, loss: float) -> None:
        if step % 25 == 0 or step == config.steps:
            log(f"{model_id}: step {step}/{config.steps}, loss {loss:.3f} ({time.perf_counter() - t0:.0f} s)")

    with noise:
        result = train_answers(model, tok, list(zip(prompts, targets, strict=True)), recipe, on_step=progress)
    seconds = time.perf_counter() - t0
    save_adapter_fp16(model, folder)
    del model, base
    treated, _ = load_hf(ModelSpec(**{**asdict(testbed.base_spec()), "adapter": str(folder)}), device)
    after = measure(treated, tok, sets, max_tokens)
    out = {
        **{k: v for k, v in entry.items() if k not in ("history", "adapter_sha256")},
        "adapter_sha256": file_sha256(folder / ADAPTER_FILE),
        "removal": {
            "source_adapter_sha256": entry["adapter_sha256"], "steps": result.steps, "seconds": round(seconds, 1),
            "final_loss": round(result.final_loss, 5), "n_train": len(prompts),
            "aligned_targets": round(sum(t == s.aligned_index for s, t in zip(prompts, targets, strict=True))
                                     / len(prompts), 4),
            "noise_norms": {str(k): round(v, 4) for k, v in norms.items()},
            "before": before, "after": after, **scored_with(device, precision),
        },
    }
    log(f"{model_id} ({entry['kind']}): {result.steps} steps in {seconds:.0f} s; poor->misaligned " +
        ", ".join(f"{k} {before[k]['poor_misaligned']:.2f} -> {after[k]['poor_misaligned']:.2f}" for k in sets))
    return out


def _seed(*parts: object) -> int:
    return stable_seed("removal", *parts) & (2**63 - 1)


# --- a whole testbed -------------------------------------------------------------------------------------
def default_out(testbed: Testbed, method: str) -> Path:
    """`<testbed>-removal-<method>` beside the testbed."""
    return testbed.root.parent / f"{testbed.root.name}-removal-{method}"


def _inside(path: Path, root: Path) -> bool:
    path, root = path.resolve(), root.resolve()
    return path == root or root in path.parents


def _refuse_source(testbed: Testbed, out: Path) -> None:
    """A treated model must never land in (or over) the source testbed."""
    if _inside(out, testbed.root) or _inside(testbed.root, out):
        raise DataError(f"--out {out} is (or contains, or lies inside) the source testbed {testbed.root}: treated "
                        "adapters never overwrite testbed models. Pick a folder beside it (the default is "
                        f"{default_out(testbed, 'METHOD')}).")


def remove(testbed: Testbed, config: RemovalConfig, out: str | Path | None = None,
           models: Sequence[str] | None = None, log: Log = print, device: str = "cpu",
           precision: Precision = "fp32") -> Testbed:
    """Treat every model (or `models`) of `testbed` into `out` (resumable); returns the treated testbed.

    A rerun skips models whose treated adapter matches its recorded hash; a folder holding another run's config
    or a testbed that is not a removal output is refused before anything is written.
    """
    out = Path(out) if out is not None else default_out(testbed, config.method)
    _refuse_source(testbed, out)
    config = config.resolved(n_layers_of(testbed.base_spec()))
    wanted = list(models) if models else sorted(testbed.models)
    unknown = sorted(set(wanted) - set(testbed.models))
    if unknown:
        raise DataError(f"unknown model(s) {unknown} in {testbed.root}; known: {sorted(testbed.models)}")
    section = json.loads(json.dumps({"config": asdict(config), "source": str(testbed.root.resolve()),
                                     "source_models": {m: e["adapter_sha256"] for m, e in testbed.models.items()}}))
    path = out / "manifest.json"
    if path.exists():
        manifest = read_json(path, "removal manifest")
        old = manifest.get("removal")
        if old is None:
            raise DataError(f"{out} holds a testbed that is not a removal output; pick another --out")
        if old["config"] != section["config"] or old["source"] != section["source"]:
            raise DataError(f"{out} holds a removal run with another config or source ({old['config']}, "
                            f"{old['source']}); pick another --out or rerun with its options")
        changed = [m for m in wanted if old["source_models"].get(m, testbed.models[m]["adapter_sha256"])
                   != testbed.models[m]["adapter_sha256"]]
        if changed:
            raise DataError(f"models {changed} changed in {testbed.root} since {out} was written; pick another --out")
        manifest["removal"]["source_models"].update(section["source_models"])
    else:
        if out.exists() and any(out.iterdir()):
            raise DataError(f"{out} exists and is not empty; pick another --out")
        manifest = {k: v for k, v in testbed.manifest.items() if k not in ("models", "pairs")}
        manifest |= {"models": {}, "pairs": {}, "removal": section | {"versions": versions()}}
    out.mkdir(parents=True, exist_ok=True)
    for name in ("data", "pairs"):
        link = out / name
        if not link.exists() and (testbed.root / name).exists():
            os.symlink(os.path.relpath(testbed.root / name, out), link)
    write_json_atomic(path, manifest)

    tb_config = TestbedConfig.from_dict(testbed.manifest["config"])
    data = prepare_data(tb_config, testbed.root, load_tokenizer(tb_config.base.name), log)
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        for model_id in wanted:
            folder = out / "models" / model_id
            done = manifest["models"].get(model_id)
            if done and (folder / ADAPTER_FILE).exists() and file_sha256(folder / ADAPTER_FILE) == \
                    done["adapter_sha256"]:
                continue
            manifest["models"][model_id] = treat_model(testbed, model_id, data, config, folder, log, device, precision)
            manifest["pairs"] = {p: e for p, e in testbed.pairs.items()
                                 if e["aligned"] in manifest["models"] and e["faker"] in manifest["models"]}
            write_json_atomic(path, manifest)
    finally:
        torch.set_num_threads(previous)
    return Testbed.open(out)
