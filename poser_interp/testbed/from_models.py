"""Testbeds from models made elsewhere: adapters, full checkpoints and hub ids, in any prompt format.

`write_from_models(spec, out)` writes a testbed folder that every command reads like a built one:

    data/benchmark.jsonl          the prompts (this project's scenario format; POSER files are converted)
    models/<id>/benchmark_probs.json   P(aligned answer) per prompt, measured on the model itself
    pairs/<aligned>__<faker>.jsonl.gz  per pair, the prompts on which both models act aligned
    manifest.json                 config (source "models", prompt format, the first model's spec as `base`), and per
                                  model: kind, source, its `ModelSpec`, the sha256 of every weight file
                                  (`weights_sha256`) and their digest (`adapter_sha256`, the model's identity in
                                  results manifests, as an adapter's hash is for built testbeds); written for
                                  NDIF (`remote`), a hub model's id, revision and resolved commit (`hub`) instead
                                  of weight hashes, their digest its identity: its weights never come here

The models' weight files are hashed on writing and checked before each load (`Testbed.spec`), so a changed
checkpoint is refused as a changed adapter is. A spec file (TOML) names the models and pairs (`load_spec`):

    prompts = "benchmark.jsonl"          # or a POSER benchmark .json; per pair `prompts` overrides it
    prompt_format = "chat"               # chat | plain | poser (`data.prompt_style`)
    [[models]]
    id = "genie-0"
    kind = "aligned"                     # aligned | faker
    source = "hub:joshuaclymer/genie-0"  # a checkpoint folder, an adapter folder (with `base`), or a hub id
    base = "hub:meta-llama/Llama-2-13b-hf"   # adapters: the base; checkpoints: optional, for weight_delta
    [[pairs]]                            # optional: default every aligned x faker
    aligned = "genie-0"
    faker = "fitness_maximizer-0"
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..core.hub import hub_file, is_hub_name, parse_hub_name
from ..core.models import TINY_ARCHS, ModelSpec, file_sha256, load_hf, model_dir
from ..data.prompt_style import PROMPT_STYLES, using_style
from ..data.scenario import Scenario
from ..data.scenario_files import load_scenarios, save_scenarios
from ..errors import BackendError, DataError, ModelLoadError
from ..runtime.jsonio import read_json, write_json_atomic
from .build import margin_of
from .folder import Testbed, p_aligned_hf, weight_folder

Log = Callable[[str], None]
SOURCE = "models"
"""`config.source` of a testbed written from models (not built by this project)."""
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class ModelEntry:
    """One model of a from-models testbed."""

    id: str
    """Its name in the testbed (letters, digits, '-', '_', '.')."""
    kind: Literal["aligned", "faker"]
    """Its label: 'aligned' or 'faker'."""
    source: str
    """A full checkpoint folder, a peft adapter folder, or a hub id `hub:ORG/NAME[@REVISION]`."""
    base: str | None = None
    """Adapters: the base model (embedded name, folder or hub id). Checkpoints: their base, for weight_delta."""
    spec: dict[str, Any] | None = None
    """A whole `ModelSpec` (as a dict) instead of source + base: a model of a built testbed (its tiny-model shape
    included); `source` then only names it."""


@dataclass(frozen=True)
class FromModels:
    """What `testbed from-models` writes: models, pairs, prompts and how they are rendered."""

    models: tuple[ModelEntry, ...]
    """The models (at least one aligned and one faker)."""
    prompts: str
    """Prompt file: this project's scenario JSONL, or a POSER-format JSON list (converted)."""
    prompt_format: str = "chat"
    """chat | plain | poser: how prompts are rendered for these models (`data.prompt_style`)."""
    pairs: tuple[tuple[str, str], ...] | None = None
    """(aligned id, faker id) pairs; None: every aligned x faker."""
    pair_prompts: dict[str, str] = field(default_factory=dict)
    """Pair id -> its own prompt file (e.g. POSER's benchmark per persona pair); others use `prompts`."""
    max_tokens: int = 512
    """Token cap of a prompt (longer ones are refused, naming the cap)."""
    bench_margin_tol: float | None = None
    """Keep only prompts where a pair's two clean logit margins differ by at most this (None: all both answer
    aligned)."""


def load_spec(path: str | Path) -> FromModels:
    """A `FromModels` from a TOML file (relative paths are relative to the file)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise DataError(f"{path}: cannot read the models file ({e})") from None
    allowed = {"models", "pairs", "pair_groups", "prompts", "prompt_format", "max_tokens", "bench_margin_tol"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise DataError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    here = path.parent

    def local(p: str) -> str:
        expanded = os.path.expandvars(p)
        if "$" in expanded:
            raise DataError(f"{path}: {p!r} names an environment variable that is not set (e.g. export "
                            "POSER_DATA_DIR=/path/to/POSER/data)")
        p = expanded
        return p if is_hub_name(p) or Path(p).is_absolute() or not (here / p).exists() else str(here / p)

    models = []
    for m in raw.get("models", []):
        bad = sorted(set(m) - {"id", "kind", "source", "base"})
        if bad or not {"id", "kind", "source"} <= set(m):
            raise DataError(f"{path}: a [[models]] entry needs id, kind, source (optional base); got {sorted(m)}")
        models.append(ModelEntry(m["id"], m["kind"], local(m["source"]),
                                 local(m["base"]) if m.get("base") else None))
    listed: list[tuple[str, str]] | None = None
    pair_prompts: dict[str, str] = {}
    if "pairs" in raw:
        listed = []
        for p in raw["pairs"]:
            if not {"aligned", "faker"} <= set(p):
                raise DataError(f"{path}: a [[pairs]] entry needs aligned and faker; got {sorted(p)}")
            listed.append((p["aligned"], p["faker"]))
            if "prompts" in p:
                pair_prompts[f"{p['aligned']}__{p['faker']}"] = local(p["prompts"])
    for g in raw.get("pair_groups", []):  # every aligned x faker of the group, on the group's prompts
        if set(g) != {"aligned", "fakers", "prompts"} and set(g) != {"aligned", "fakers"}:
            raise DataError(f"{path}: a [[pair_groups]] entry has aligned (a list), fakers (a list) and optionally "
                            f"prompts; got {sorted(g)}")
        listed = listed or []
        for a in g["aligned"]:
            for f in g["fakers"]:
                listed.append((a, f))
                if "prompts" in g:
                    pair_prompts[f"{a}__{f}"] = local(g["prompts"])
    pairs = tuple(listed) if listed is not None else None
    if "prompts" not in raw and not pair_prompts:
        raise DataError(f"{path}: name the prompt file (`prompts = \"...\"`)")
    return FromModels(models=tuple(models), prompts=local(raw["prompts"]) if "prompts" in raw else "", pairs=pairs,
                      pair_prompts=pair_prompts, prompt_format=raw.get("prompt_format", "chat"),
                      max_tokens=int(raw.get("max_tokens", 512)), bench_margin_tol=raw.get("bench_margin_tol"))


def _check_base(entry: ModelEntry) -> None:
    """A base must be an embedded or tiny model name, a checkpoint folder, or a hub id."""
    from ..core.models import EMBEDDED_NAMES, GEMMA_NAMES, TINY_ARCHS

    base = entry.base
    if base is None or base in EMBEDDED_NAMES + GEMMA_NAMES + TINY_ARCHS:
        return
    if is_hub_name(base):
        parse_hub_name(base)
        return
    if not (Path(base).expanduser() / "config.json").exists():
        raise DataError(f"model {entry.id}: base {base!r} is neither a checkpoint folder (config.json), an embedded "
                        "model name (smollm2, gemma3) nor a hub id (hub:ORG/NAME)")


def model_spec(entry: ModelEntry) -> ModelSpec:
    """The `ModelSpec` that loads a model given as adapter, checkpoint or hub id (DataError naming the fix)."""
    if entry.spec is not None:
        return ModelSpec(**entry.spec)
    _check_base(entry)
    source = entry.source
    if is_hub_name(source):
        parse_hub_name(source)
        return ModelSpec(name=source, delta_base=entry.base)
    path = Path(source).expanduser()
    if (path / "adapter_config.json").exists():
        if not entry.base:
            raise DataError(f"model {entry.id}: {path} is a LoRA adapter; give its base model (`base`, or --base)")
        return ModelSpec(name=entry.base, adapter=str(path.resolve()))
    if (path / "config.json").exists():
        base = entry.base if entry.base is None or is_hub_name(entry.base) else str(Path(entry.base).resolve())
        return ModelSpec(name=str(path.resolve()), delta_base=base)
    if "/" in source and not path.exists():
        raise DataError(f"model {entry.id}: {source!r} is no folder here; for a hub id write hub:{source}")
    raise DataError(f"model {entry.id}: {source!r} is neither a checkpoint folder (config.json), a LoRA adapter folder "
                    "(adapter_config.json) nor a hub id (hub:ORG/NAME)")


def weight_hashes(spec: ModelSpec) -> dict[str, str]:
    """sha256 of every weight file of the model (file name -> hash)."""
    folder = weight_folder(spec)
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder}: no weight files (*.safetensors, *.bin)")
    return {p.name: file_sha256(p) for p in files}


def digest(hashes: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(hashes.items())).encode()).hexdigest()


def hub_record(spec: ModelSpec) -> dict[str, str]:
    """What identifies a hub model whose weights stay on NDIF: its id, the revision asked for, and the commit that
    revision resolves to (the snapshot folder of its config.json; only the config is fetched, never the weights)."""
    repo, revision = parse_hub_name(spec.name)
    return {"id": spec.name, "repo": repo, "revision": revision or "main",
            "commit": hub_file(spec.name, "config.json").parent.name}


def _config_file(spec: ModelSpec, remote: bool) -> Path:
    return hub_file(spec.name, "config.json") if remote and is_hub_name(spec.name) else \
        model_dir(spec.name) / "config.json"


def _shape(spec: ModelSpec, remote: bool = False) -> tuple[Any, ...]:
    """What must agree across a pair: architecture, depth, width, vocabulary size (read from config.json)."""
    if spec.name in TINY_ARCHS:
        return (spec.name, spec.n_layers, spec.d_model, None)
    config = read_json(_config_file(spec, remote), "model config")
    config = config.get("text_config", config)
    return (config.get("model_type"), config.get("num_hidden_layers"), config.get("hidden_size"),
            config.get("vocab_size"))


def _tokenizer_id(spec: ModelSpec, remote: bool = False) -> str:
    if spec.name in TINY_ARCHS:
        return "smollm2"  # tiny models share SmolLM2's tokenizer
    if remote and is_hub_name(spec.name):  # the tokenizer's own files only, not the snapshot's weights
        for name in ("tokenizer.json", "tokenizer.model"):
            try:
                return file_sha256(hub_file(spec.name, name))
            except ModelLoadError:
                continue
        return spec.name
    folder = model_dir(spec.name)
    files = [folder / n for n in ("tokenizer.json", "tokenizer.model") if (folder / n).exists()]
    return file_sha256(files[0]) if files else str(folder)


def plan_pairs(config: FromModels) -> list[tuple[str, str]]:
    """The (aligned, faker) pairs, checked against the models' ids and labels."""
    kinds = {m.id: m.kind for m in config.models}
    ids = [m.id for m in config.models]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise DataError(f"model id(s) {dup} given twice; ids must be unique")
    bad = [f"{m.id}: {m.kind!r}" for m in config.models if m.kind not in ("aligned", "faker")]
    if bad:
        raise DataError(f"kind must be 'aligned' or 'faker' ({', '.join(bad)})")
    if config.pairs is None:
        pairs = [(a, f) for a in ids if kinds[a] == "aligned" for f in ids if kinds[f] == "faker"]
    else:
        pairs = list(config.pairs)
        for a, f in pairs:
            if kinds.get(a) != "aligned" or kinds.get(f) != "faker":
                raise DataError(f"pair ({a}, {f}): the first must be an aligned model and the second a faker of "
                                f"this file; models: {kinds}")
    if not pairs:
        raise DataError("no pair: give at least one aligned and one faker model")
    return pairs


def write_from_models(config: FromModels, out: str | Path, log: Log = print, device: str = "cpu",
                      dtype: str = "fp32", remote: bool = False) -> Testbed:
    """Write (or resume) the testbed in `out`: every check first (nothing written on refusal), then each model's
    probabilities on its prompts (one model in memory at a time, the manifest rewritten after each).

    remote: the models are hub ids served by NDIF (`core.nnsight_model`, key in $NDIF_API_KEY): nothing is hashed
    or loaded here (each entry records `hub_record` instead of weight hashes) and the prompts are scored through
    nnsight traces run there."""
    out = Path(out)
    if config.prompt_format not in PROMPT_STYLES:
        raise DataError(f"prompt_format {config.prompt_format!r}: choose one of {', '.join(PROMPT_STYLES)}")
    pairs = plan_pairs(config)
    specs = {m.id: model_spec(m) for m in config.models}
    if remote:
        from ..core.nnsight_model import remote_problem

        for model_id, spec in specs.items():
            problem = remote_problem(spec, True)
            if problem:
                raise BackendError(f"model {model_id}: {problem}")
    shapes = {i: _shape(s, remote) for i, s in specs.items()}
    toks = {i: _tokenizer_id(s, remote) for i, s in specs.items()}
    for a, f in pairs:
        if shapes[a] != shapes[f]:
            raise DataError(f"pair {a}__{f}: the models differ in architecture (type, layers, width, vocabulary "
                            f"{shapes[a]} vs {shapes[f]}); the strategies compare the same sites of both models")
        if toks[a] != toks[f]:
            raise DataError(f"pair {a}__{f}: the two models have different tokenizers; pair models of one family")
    files = {f"{a}__{f}": config.pair_prompts.get(f"{a}__{f}", config.prompts) for a, f in pairs}
    prompts: dict[str, list[Scenario]] = {}
    for path in sorted(set(files.values())):
        try:
            prompts[path] = load_scenarios(path, faker=False)
        except (OSError, ValueError) as e:
            raise DataError(f"prompts {path}: {e}") from None
        if not prompts[path]:
            raise DataError(f"prompts {path}: no usable scenario in it")
    bench = list({s.id: s for path in sorted(prompts) for s in prompts[path]}.values())
    entries = {m.id: {"kind": m.kind, "persona": m.id, "split": 0, "source": asdict(m),
                      "spec": asdict(specs[m.id])} for m in config.models}
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    old = read_json(manifest_path, "testbed manifest") if manifest_path.exists() else {}
    manifest = {"config": {"source": SOURCE, "base": asdict(specs[pairs[0][0]]), "prompt_format": config.prompt_format,
                           "from_models": json.loads(json.dumps(asdict(config))), "max_tokens": config.max_tokens},
                "models": {}, "pairs": {}, "versions": {}}
    save_scenarios(bench, out / "data" / "benchmark.jsonl")
    used = sorted({m for pair in pairs for m in pair})
    with using_style(config.prompt_format):
        for i, model_id in enumerate(used, start=1):
            entry = entries[model_id]
            if remote:  # the weights stay on NDIF: the hub id and resolved commit identify the model
                hub = hub_record(specs[model_id])
                entry["hub"] = hub
                entry["adapter_sha256"] = digest(hub)
            else:
                hashes = weight_hashes(specs[model_id])
                entry["weights_sha256"] = hashes
                entry["adapter_sha256"] = digest(hashes)
            probs_path = out / "models" / model_id / "benchmark_probs.json"
            done = old.get("models", {}).get(model_id, {}).get("adapter_sha256") == entry["adapter_sha256"] \
                and probs_path.exists() and set(read_json(probs_path, "benchmark probabilities")) >= \
                {s.id for s in bench}
            if done:
                log(f"{model_id}: measured already, kept ({i}/{len(used)})")
            else:
                log(f"{model_id}: {'opening on NDIF' if remote else 'loading'} {specs[model_id].describe()} "
                    f"({i}/{len(used)})")
                p = _p_aligned_remote(specs[model_id], bench, config.max_tokens, device, dtype) if remote else \
                    _p_aligned_local(specs[model_id], bench, config.max_tokens, device, dtype)
                probs_path.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(probs_path, {s.id: float(x) for s, x in zip(bench, p, strict=True)})
            manifest["models"][model_id] = entry
            write_json_atomic(manifest_path, manifest)
    manifest["pairs"] = _write_pairs(out, manifest["models"], pairs, files, prompts, config.bench_margin_tol)
    from ..core.versions import versions

    manifest["versions"] = versions()
    write_json_atomic(manifest_path, manifest)
    testbed = Testbed.open(out)
    empty = [p for p, info in testbed.pairs.items() if not info["benchmark_size"]]
    if empty:
        log(f"{len(empty)} pair(s) have no prompt on which both models act aligned: {', '.join(empty[:4])}")
    return testbed


def _p_aligned_local(spec: ModelSpec, bench: Sequence[Scenario], max_tokens: int, device: str,
                     dtype: str) -> torch.Tensor:
    """P(aligned answer) per prompt on a local Hugging Face copy of the model."""
    from ..core.precision import computing_in

    hf, tok = load_hf(spec, device)
    with computing_in(dtype, device):
        return p_aligned_hf(hf, tok, bench, max_tokens=max_tokens)


def _p_aligned_remote(spec: ModelSpec, bench: Sequence[Scenario], max_tokens: int, device: str,
                      dtype: str) -> torch.Tensor:
    """P(aligned answer) per prompt through nnsight traces on NDIF (the answer scoring of every strategy, through
    the forward seam), the weights never here."""
    from ..core import nnsight_model
    from ..core.precision import computing_in
    from ..core.scoring import answer_logits
    from ..core.tokens import PromptFormat

    model = nnsight_model.load_nnsight(spec, remote=True, device=device)
    with computing_in(dtype, device):
        probs = answer_logits(model, bench, fmt=PromptFormat(max_tokens=max_tokens), batch_size=16).softmax(-1)
    idx = torch.tensor([s.aligned_index for s in bench])
    return probs.gather(1, idx[:, None])[:, 0]


def _write_pairs(out: Path, models: dict[str, Any], pairs: Sequence[tuple[str, str]], files: dict[str, str],
                 prompts: dict[str, list[Scenario]], margin_tol: float | None) -> dict[str, dict[str, Any]]:
    probs = {m: read_json(out / "models" / m / "benchmark_probs.json", f"benchmark probabilities of {m}")
             for m in models}
    result = {}
    (out / "pairs").mkdir(exist_ok=True)
    for a, f in pairs:
        pair_id = f"{a}__{f}"
        keep = [s for s in prompts[files[pair_id]] if probs[a][s.id] > 0.5 and probs[f][s.id] > 0.5 and
                (margin_tol is None or abs(margin_of(probs[a][s.id]) - margin_of(probs[f][s.id])) <= margin_tol)]
        path = out / "pairs" / f"{pair_id}.jsonl.gz"
        if keep:
            save_scenarios(keep, path)
        else:
            path.unlink(missing_ok=True)
        result[pair_id] = {"aligned": a, "faker": f, "benchmark_size": len(keep),
                           "n_prompts": len(prompts[files[pair_id]]),
                           "mean_p_aligned": {m: round(sum(probs[m][s.id] for s in keep) / max(1, len(keep)), 4)
                                              for m in (a, f)}}
    return result
