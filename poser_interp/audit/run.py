"""`audit(A, B)`: write the pair as a from-models testbed, run the fixed detectors and the baselines, and decide
by the rule of `verdict.py`. Everything lands in one output folder (the testbed, the results store, verdict.json,
audit.html), so an interrupted audit resumes where it stopped and its numbers can be re-read later."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.nnsight_model import remote_problem
from ..core.precision import check_precision
from ..core.shape import shape_of
from ..data.generator import GeneratorConfig, generate
from ..data.prompt_style import check_style
from ..data.scenario_files import save_scenarios
from ..errors import BackendError, DataError, PoserInterpError
from ..evaluation.results import ResultsStore
from ..evaluation.runner import BACKENDS, Backend, RunConfig, applicable, run_detection
from ..runtime.jsonio import write_json_atomic
from ..strategies.registry import baseline_names, build, has_option
from ..testbed.folder import Testbed
from ..testbed.from_models import FromModels, ModelEntry, model_spec, write_from_models
from .verdict import MIN_PROMPTS, Verdict, Vote, decide, vote_for

Log = Callable[[str], None]
PAIR = "A__B"
DETECTORS = ("concept_size", "noise", "attention", "lens", "probes")
"""Detectors an audit runs when no reference file names them (primary settings, fixed in advance)."""
REFERENCE_FILE = "reference.json"


def load_reference() -> dict[str, Any] | None:
    """The packaged reference ensemble (`poser_interp/audit/reference.json`), or None when none is shipped."""
    path = resources.files("poser_interp.audit") / REFERENCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass(frozen=True)
class AuditConfig:
    """How an audit runs (recorded in verdict.json)."""

    prompts: str | None = None
    """Prompt file (scenario JSONL or POSER JSON); None: 200 good-oversight prompts from this project's generator."""
    prompt_format: str = "chat"
    """chat | plain | poser (`data.prompt_style`)."""
    base: str | None = None
    """Adapters: their base model; checkpoints: their base, for the weight-change baseline."""
    detectors: tuple[str, ...] | None = None
    """Detectors to run (None: the reference file's, else `DETECTORS`)."""
    n_boot: int = 1000
    """Bootstrap resamples of the prompts per detector."""
    seed: int = 0
    """Seeds the detectors that draw, and the bootstrap."""
    max_prompts: int | None = None
    """At most this many prompts (None: all on which both act aligned)."""
    device: str = "cpu"
    """Where models run."""
    dtype: str = "fp32"
    """fp32 | bf16 | fp16 (autocast on the device)."""
    backend: Backend = "tl"
    """What runs the detectors' forward passes: 'tl' (the TransformerLens bridge) or 'nnsight' (`RunConfig.backend`;
    recorded in the results and in each row). Locally both score the prompts on a Hugging Face copy (equal numbers)."""
    remote: bool = False
    """With backend 'nnsight': the models are hub ids served by NDIF (key in $NDIF_API_KEY): nothing is hashed or
    loaded here, the prompts are scored through nnsight traces there, and what needs the weights here (S3, lens,
    the weight_delta baseline) is skipped with its reason."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise DataError(f"backend {self.backend!r}: pass one of {', '.join(BACKENDS)} (--backend)")
        if self.remote and self.backend != "nnsight":
            raise DataError("--remote runs nnsight traces on NDIF: add --backend nnsight")


def model_entry(slot: str, text: str, base: str | None) -> ModelEntry:
    """A model given on the command line: a folder, a hub id, or TESTBED::MODEL_ID (a model of a built testbed)."""
    if "::" in text:
        root, _, model_id = text.partition("::")
        tb = Testbed.open(root)
        spec = tb.spec(model_id)  # hash-checked
        return ModelEntry(slot, "aligned" if slot == "A" else "faker", text, spec=asdict(spec))
    return ModelEntry(slot, "aligned" if slot == "A" else "faker", text, base)


def audit(model_a: str, model_b: str, out: str | Path, config: AuditConfig = AuditConfig(),
          log: Log = print, progress: Any = None) -> Verdict:
    """Audit the pair (A, B): returns the verdict and writes verdict.json and audit.html in `out`."""
    out = Path(out)
    existed = out.exists() and any(out.iterdir())
    if model_a == model_b:
        raise DataError("the two models are the same; audit compares two different models")
    reference = load_reference()
    detectors = config.detectors or tuple(reference["detectors"] if reference else DETECTORS)
    entries = (model_entry("A", model_a, config.base), model_entry("B", model_b, config.base))
    check_style(config.prompt_format)
    for entry in entries:  # every model named rightly before anything is written
        problem = remote_problem(model_spec(entry), config.remote)
        if problem:
            raise BackendError(f"model {entry.id} ({entry.source}): {problem}")
    prompts = config.prompts
    if prompts is None:
        prompts = str(out / "prompts.jsonl")
        if not Path(prompts).exists():
            bench = generate(GeneratorConfig(seed=config.seed, n_train=0, n_test=0, n_benchmark=200,
                                             n_heldout=0))["benchmark"]
            save_scenarios(bench, prompts)
    spec = FromModels(models=entries, prompts=prompts, prompt_format=config.prompt_format)
    try:
        testbed = write_from_models(spec, out / "testbed", log=log, device=config.device, dtype=config.dtype,
                                    remote=config.remote)
    except PoserInterpError:
        if not existed and not (out / "testbed" / "manifest.json").exists():  # refused before anything measured
            shutil.rmtree(out, ignore_errors=True)
        raise
    info = testbed.pairs[PAIR]
    kept, total = info["benchmark_size"], info["n_prompts"]
    if kept < MIN_PROMPTS:
        raise DataError(f"the two models both act aligned on {kept} of {total} prompts (a detector may only see "
                        f"prompts where both behave well); at least {MIN_PROMPTS} are needed: give more prompts "
                        "(--prompts) or check the prompt format (--prompt-format)")
    log(f"{kept} of {total} prompts kept (both models act aligned); {total - kept} dropped")
    n_layers, n_heads = shape_of(testbed.base_spec())
    names = list(dict.fromkeys([*detectors, *baseline_names()]))
    strategies = [build(n, n_layers, n_heads, **({"seed": config.seed} if has_option(n, "seed") else {}))
                  for n in names]
    runnable, skipped = applicable(testbed, strategies, config.max_prompts)
    if config.remote:  # what needs the weights here is skipped, as a detector these prompts cannot serve is
        skipped |= {s.name: f"cannot run with --remote: {getattr(s, 'local_reason', '')}; audit without --remote "
                            "to run it here" for s in runnable if s.needs_model and not getattr(s, "remote_ok", True)}
        runnable = [s for s in runnable if s.name not in skipped]
    for name, why in skipped.items():
        log(f"{name}: not run on this pair. {why}")
    run_detection(testbed, runnable, out / "results", pairs=[PAIR], progress=progress, log=log, primary_only=True,
                  config=RunConfig(seed=config.seed, max_prompts=config.max_prompts,
                                   precision=check_precision(config.dtype, config.device), device=config.device,
                                   backend=config.backend, remote=config.remote))
    store = ResultsStore.open(out / "results")
    ids = store.manifest["pairs"][PAIR]["prompt_ids"]
    votes = [_vote(store, s, ids, config, reference, s.name in baseline_names()) for s in runnable]
    verdict = decide(votes, reference, len(ids), total - len(ids))
    names_of = {"A": model_a, "B": model_b}
    record = {**verdict.to_dict(names_of), "skipped": skipped, "config": {**config.__dict__},
              "detectors": list(detectors)}
    write_json_atomic(out / "verdict.json", record)
    from ..viz.audit_page import write_audit_page

    write_audit_page(record, out / "audit.html")
    return verdict


def _vote(store: ResultsStore, strategy: Any, ids: Sequence[str], config: AuditConfig,
          reference: dict[str, Any] | None, baseline: bool) -> Vote:
    setting = strategy.primary()
    rows = {m: store.get(m, strategy.name, setting).values.subset(ids) for m in ("A", "B")}
    return vote_for(strategy.name, strategy.scores()[0], setting.key, rows["A"], rows["B"], reference, config.n_boot,
                    config.seed, baseline)
