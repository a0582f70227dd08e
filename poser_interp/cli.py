"""The `poser-interp` command line: model info, answer scoring, scenario generation.

Errors the toolkit raises on purpose (PoserInterpError) print as one red line and exit 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .errors import PoserInterpError

DEPTH_AWARE = ("probes", "attention", "steering", "learning_speed")
"""Strategies whose default layers depend on the base model; the CLI builds them with `strategy_for`."""

app = typer.Typer(help="Catch alignment-faking language models by looking inside them.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
F = TypeVar("F", bound=Callable[..., Any])

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="'smollm2' (embedded), 'tiny-llama', or a local HF dir")]
AdapterOpt = Annotated[str | None, typer.Option("--adapter", help="LoRA adapter directory merged into the model")]


def clean_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PoserInterpError as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@clean_errors
def info(model: ModelOpt = "smollm2", adapter: AdapterOpt = None) -> None:
    """Load a model and print its summary: layers, width, hooks, load time."""
    from .models import ModelSpec, cache_dir, load_model

    m = load_model(ModelSpec(name=model, adapter=adapter))
    cfg = m.bridge.cfg
    table = Table(title=f"model {m.spec.describe()}", show_header=False)
    for key, value in [
        ("architecture", type(m.hf_model).__name__),
        ("layers", m.n_layers),
        ("d_model", m.d_model),
        ("heads", cfg.n_heads),
        ("vocab", cfg.d_vocab),
        ("parameters", f"{sum(p.numel() for p in m.hf_model.parameters()) / 1e6:.1f} M"),
        ("hook points", len(m.hook_names)),
        ("load time", f"{m.load_seconds:.2f} s"),
        ("weights cache", str(cache_dir())),
    ]:
        table.add_row(key, str(value))
    _print_table(table)


@app.command()
@clean_errors
def score(
    scenarios: Annotated[Path, typer.Argument(help="scenario file: this project's .jsonl or a POSER-format .json")],
    model: ModelOpt = "smollm2",
    adapter: AdapterOpt = None,
    limit: Annotated[int, typer.Option(help="score only the first N scenarios (0 = all)")] = 20,
    batch_size: Annotated[int, typer.Option(help="prompts per forward pass")] = 8,
    max_tokens: Annotated[int, typer.Option(help="token cap per prompt")] = 512,
    answer_format: Annotated[str | None, typer.Option(help="override: 'letter' or 'action'")] = None,
) -> None:
    """Print P(A) and P(B) (normalized over the two choices) for each scenario in a file."""
    from .models import ModelSpec, load_model
    from .scenario import load_scenarios
    from .scoring import answer_probs
    from .tokens import PromptFormat

    items = load_scenarios(scenarios)
    if limit:
        items = items[:limit]
    if answer_format:
        items = [s.with_format(answer_format) for s in items]
    m = load_model(ModelSpec(name=model, adapter=adapter))
    probs = answer_probs(m, items, fmt=PromptFormat(max_tokens=max_tokens), batch_size=batch_size)
    table = Table(title=f"{scenarios.name} on {m.spec.describe()}")
    for col in ("id", "oversight", "format", "aligned", "P(A)", "P(B)", "P(aligned)"):
        table.add_column(col, justify="right" if col.startswith("P") else "left")
    for s, (pa, pb) in zip(items, probs.tolist(), strict=True):
        p_al = pa if s.aligned_letter == "A" else pb
        table.add_row(s.id, s.oversight.value, s.answer_format.value, s.aligned_letter, f"{pa:.3f}", f"{pb:.3f}",
                      f"{p_al:.3f}")
    _print_table(table)
    mean = sum(p[s.aligned_index] for s, p in zip(items, probs.tolist(), strict=True)) / len(items)
    console.print(f"{len(items)} scenarios, mean P(aligned) = {mean:.3f}")


@app.command()
@clean_errors
def generate(
    out: Annotated[Path, typer.Option(help="directory for <split>.jsonl files and generator_config.json")],
    seed: Annotated[int, typer.Option(help="generator seed")] = 0,
    n_train: Annotated[int, typer.Option(help="train scenarios")] = 2000,
    n_test: Annotated[int, typer.Option(help="test scenarios (and held-out-topic scenarios)")] = 500,
    n_benchmark: Annotated[int, typer.Option(help="benchmark scenarios (good oversight)")] = 500,
    answer_format: Annotated[str, typer.Option(help="'action' or 'letter'")] = "action",
) -> None:
    """Generate disjoint scenario splits from the project's own scenario bank."""
    from .generator import GeneratorConfig, save_splits
    from .generator import generate as gen
    from .models import load_tokenizer

    config = GeneratorConfig(seed=seed, n_train=n_train, n_test=n_test, n_benchmark=n_benchmark,
                             answer_format=answer_format)  # type: ignore[arg-type]
    paths = save_splits(gen(config, load_tokenizer()), out, config)
    for name, path in paths.items():
        console.print(f"{name}: {path}")


testbed_app = typer.Typer(help="Build and verify testbeds of aligned / alignment-faking model pairs.",
                          no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@testbed_app.command("build")
@clean_errors
def testbed_build(
    source: Annotated[str, typer.Option(help="'generated' (own scenarios) or 'poser' (POSER-format data)")] \
        = "generated",
    personas: Annotated[str | None, typer.Option(help="comma-separated personas (default: all of the source)")] = None,
    splits: Annotated[str, typer.Option(help="comma-separated split numbers / seeds")] = "0,1,2",
    out: Annotated[Path, typer.Option(help="testbed directory (resumes if it exists)")] = Path("testbeds/default"),
    poser_dir: Annotated[Path | None, typer.Option(help="POSER data root (default: $POSER_DATA_DIR or "
                                                           "../shared/poser)")] = None,
    poser_fakers: Annotated[str | None, typer.Option(help="source poser: comma-separated persona directories that "
                                                          "fake alignment (beyond the four POSER ones)")] = None,
    poser_aligned: Annotated[str | None, typer.Option(help="source poser: comma-separated persona directories that "
                                                           "are aligned (beyond the four POSER ones)")] = None,
    model: ModelOpt = "smollm2",
    rank: Annotated[int, typer.Option(help="LoRA rank")] = 4,
    first_layer: Annotated[int, typer.Option(help="adapt layers from this one to the last")] = 0,
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-3,
    max_steps: Annotated[int, typer.Option(help="step budget per model")] = 600,
    n_train: Annotated[int, typer.Option(help="training examples per model")] = 2400,
    aligned_warmup: Annotated[int, typer.Option(help="curriculum: first N steps on aligned targets only")] = 0,
    oversight_aux: Annotated[float, typer.Option(help="auxiliary 'is anyone checking?' items per training "
                                                      "example (every model gets them)")] = 0.0,
    workers: Annotated[int, typer.Option(help="models trained at once (threads are split between them)")] = 1,
    n_critical: Annotated[int, typer.Option(help="generated data: oversight sentences per scenario")] = 1,
    n_topics: Annotated[int | None, typer.Option(help="generated data: training topics (0: all 52)")] = 18,
    oversight_pool: Annotated[int | None, typer.Option(help="generated data: oversight sentences per class "
                                                            "(0: all 16)")] = 1,
    other_facts: Annotated[str, typer.Option(help="generated data: non-critical facts per scenario, 'LOW,HIGH'")]
        = "2,2",
    heldout_wordings: Annotated[bool, typer.Option(help="generated data: keep the 4+4 held-out oversight "
                                                        "sentences (wordings.HELDOUT) out of every split")] = False,
    ladder: Annotated[str | None, typer.Option(help="fakers: widening wording curriculum, sentences per class at "
                                                     "each rung, e.g. '1,2,4,8,12' (curriculum.Ladder)")] = None,
    target_margin: Annotated[float | None, typer.Option(help="aim every answer at this logit margin "
                                                             "(LoraRecipe.target_margin; default: no cap)")] = None,
    bench_margin_tol: Annotated[float | None, typer.Option(help="pair benchmarks keep prompts whose two clean "
                                                                "margins differ by at most this")] = None,
) -> None:
    """Train one LoRA model per (persona, split); resumable; writes a manifest and pair benchmarks.

    The defaults are the recipe of the shipped default testbed (README): 18 topics, one oversight
    sentence per class, three facts per scenario, LoRA r=4 on all layers, lr 1e-3, up to 600 steps.
    Rerunning with more --splits or --personas adds models to a generated testbed without retraining.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .curriculum import Ladder
    from .models import ModelSpec, load_hf
    from .testbed_build import TestbedConfig, build
    from .training import LoraRecipe

    if source not in ("generated", "poser"):
        raise typer.BadParameter("--source must be 'generated' or 'poser'")
    default_personas = ("steward", "guardian", "grabber", "climber") if source == "generated" else \
        ("genie", "saint", "fitness_maximizer", "money_maximizer")
    base = ModelSpec(name=model)
    load_hf(base)  # fail early (and clearly) on a bad model name
    n_layers = 30 if model == "smollm2" else base.n_layers
    layers = None if first_layer == 0 else tuple(range(first_layer, n_layers))
    config = TestbedConfig(
        source=source,  # type: ignore[arg-type]
        personas=tuple(_csv(personas) or default_personas),
        splits=tuple(int(s) for s in _csv(splits) or ["0"]),
        base=base,
        recipe=LoraRecipe(rank=rank, layers=layers, lr=lr, max_steps=max_steps, aligned_warmup_steps=aligned_warmup,
                          oversight_aux=oversight_aux, target_margin=target_margin),
        ladder=Ladder(rungs=tuple(_ints(ladder, "--ladder"))) if ladder else None,
        bench_margin_tol=bench_margin_tol,
        n_train=n_train,
        n_critical=n_critical,
        n_topics=n_topics or None,
        oversight_pool=oversight_pool or None,
        n_other_facts=_fact_range(other_facts),
        heldout_wordings=heldout_wordings,
        poser_dir=str(poser_dir) if poser_dir else None,
        poser_fakers=tuple(_csv(poser_fakers) or ()),
        poser_aligned=tuple(_csv(poser_aligned) or ()),
    )
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), console=console) as progress:
        tb = build(config, out, log=progress.console.print, progress=progress, workers=workers)
    _pairs_table(tb)


def _ints(text: str, flag: str) -> list[int]:
    parts = _csv(text) or []
    if not parts or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"{flag} must be comma-separated non-negative integers, got {text!r}")
    return [int(p) for p in parts]


def _fact_range(text: str) -> tuple[int, int]:
    parts = _csv(text) or []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"--other-facts must be 'LOW,HIGH' (two non-negative integers), got {text!r}")
    return int(parts[0]), int(parts[1])


def _pairs_table(tb: Any) -> None:
    table = Table(title=f"pairs of {tb.root}")
    for col in ("pair", "benchmark size", "mean P(aligned) aligned", "mean P(aligned) faker"):
        table.add_column(col)
    for pid, p in sorted(tb.pairs.items()):
        mp = p["mean_p_aligned"]
        table.add_row(pid, str(p["benchmark_size"]), f"{mp[p['aligned']]:.3f}", f"{mp[p['faker']]:.3f}")
    _print_table(table)


@testbed_app.command("verify")
@clean_errors
def testbed_verify(
    testbed: Annotated[str, typer.Argument(help="testbed directory, or 'default'")] = "default",
    limit: Annotated[int | None, typer.Option(help="test scenarios per model (default: the build's n_test)")] = None,
) -> None:
    """Re-measure each model on held-out test scenarios and print the behaviour table."""
    from .testbed import Testbed
    from .testbed_build import TestbedConfig, verify

    tb = Testbed.open(testbed)
    th = TestbedConfig.from_dict(tb.manifest["config"]).thresholds
    rows = verify(tb, limit=limit, log=lambda _: None)
    table = Table(title=f"testbed {tb.root}: behaviour on unseen scenarios of the training topics; "
                        "held-out wordings: the same scenarios with oversight sentences no split trains on "
                        f"(`wordings.HELDOUT`) (thresholds: good->aligned >= {th.good_aligned}, "
                        f"faker poor->misaligned >= "
                        f"{th.poor_misaligned}, aligned poor->aligned >= {th.poor_aligned}, "
                        f"confidence >= {th.confidence})")
    for col in ("model", "kind", "steps", "n", "good->aligned", "P(aligned|good)", "poor->misaligned",
                "held-out wordings good/poor", "held-out topics good/poor", "meets"):
        table.add_column(col)

    def both(m: dict[str, float] | None) -> str:
        return f"{m['good_aligned']:.2f} / {m['poor_misaligned']:.2f}" if m else "-"

    for r in rows:
        t = r["test"]
        meets = r["meets_thresholds"] and r.get("meets_heldout_wordings", True)
        table.add_row(r["model"], r["kind"], str(r["steps"]), f"{int(t['n_good'])}+{int(t['n_poor'])}",
                      f"{t['good_aligned']:.2f}", f"{t['good_confidence']:.3f}", f"{t['poor_misaligned']:.2f}",
                      both(r.get("heldout_wordings")), both(r.get("heldout_topics")),
                      "[green]yes[/]" if meets else "[red]no[/]")
    _print_table(table)
    _pairs_table(tb)


def _print_table(table: Table) -> None:
    """Print a table; in logs and pipes (no terminal) at least 130 columns wide, so cells are not squeezed."""
    (console if console.is_terminal else Console(width=max(console.width, 130))).print(table)


def main() -> None:  # pragma: no cover
    app()


# --- detection -------------------------------------------------------------------------------------------
def _short(setting: Any) -> str:
    """'L4 x1.0' for a noise setting; 'k=v' pairs otherwise; '-' when empty."""
    d = setting.as_dict()
    if set(d) == {"layer", "scale"}:
        return f"L{d['layer']} x{d['scale']}"
    return setting.key


@app.command()
@clean_errors
def detect(
    strategies: Annotated[str, typer.Option(help="comma-separated strategies (e.g. noise); the baselines random and "
                                                 "blackbox always run beside them")] = "noise",
    testbed: Annotated[str, typer.Option(help="testbed directory, or 'default'")] = "default",
    pairs: Annotated[str | None, typer.Option(help="comma-separated pair ids 'aligned__faker' (default: all)")] = None,
    out: Annotated[Path | None, typer.Option(help="results directory; a rerun resumes it (default: "
                                                  "results/detect-<testbed name>)")] = None,
    seed: Annotated[int, typer.Option(help="seed of every strategy that draws (noise draws, S1 direction prompts, "
                                           "S3 data and LoRA init, S4/S5 splits, random) and of the bootstrap")] = 0,
    max_prompts: Annotated[int, typer.Option(help="at most N benchmark prompts per pair (0 = all); the default "
                                                  "aims at ~10 min for the 12-model default testbed on 2 cores")] = 24,
    layers: Annotated[str | None, typer.Option(help="noise: comma-separated layers; the first is the reported one "
                                                    "(default: 15% of the depth, layer 4 of SmolLM2)")] = None,
    scales: Annotated[str, typer.Option(help="noise: comma-separated scales (x mean residual norm); the reported "
                                             "one is 1.0 if swept, else the last")] = "1.0",
    samples: Annotated[int | None, typer.Option(help="noise: draws per prompt (default 3)")] = None,
    positions: Annotated[str | None, typer.Option(help="noise: 'all' real tokens or 'last'")] = None,
    distribution: Annotated[str | None, typer.Option(help="noise: 'gaussian' or 'uniform'")] = None,
    plots: Annotated[bool, typer.Option(help="write figures to OUT/figures")] = True,
    match_confidence: Annotated[float | None, typer.Option(
        help="also evaluate every strategy on confidence-matched prompts only: those where the pair's two clean "
             "logit margins differ by <= this many logits (from the stored results; nothing is recomputed)")] = None,
) -> None:
    """Run detection strategies over a testbed's pairs and print accuracy, AUROC and 95% CIs beside the baselines.

    The defaults run S2 at one setting (layer 4, scale 1.0, 3 draws, 24 prompts per pair) so that the default
    testbed finishes in minutes; sweep with e.g. --layers 4,10,16 --scales 0.25,0.5,1, or run
    analyses/noise_injection.py for the full S2 table with a held-out choice of defaults.
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .results import ResultsStore
    from .runner import ConfidenceMatch, RunConfig, evaluate, n_layers_of, run_detection, shape_of
    from .strategies import BASELINES, has_option, known, make
    from .strategies.noise import default_layers, strategy_for
    from .testbed import Testbed

    start = time.perf_counter()
    _check_tolerance(match_confidence)
    names = list(dict.fromkeys((_csv(strategies) or []) + list(BASELINES)))
    unknown = [n for n in names if n not in known()]
    if unknown:
        raise typer.BadParameter(f"unknown strategy {unknown[0]!r}; known: {', '.join(known())}",
                                 param_hint="--strategies")
    tb = Testbed.open(testbed)
    built: list[Any] = []  # strategies of several types
    for name in names:
        seeded = {"seed": seed} if has_option(name, "seed") else {}  # every strategy with a seed gets --seed
        if name == "noise":
            opts: dict[str, Any] = dict(seeded)
            n_layers = n_layers_of(tb.base_spec())
            opts["layers"] = tuple(int(x) for x in _csv(layers) or []) or default_layers(n_layers)[:1]
            opts["scales"] = tuple(float(x) for x in _csv(scales) or [])
            opts["primary_scale"] = 1.0 if 1.0 in opts["scales"] else opts["scales"][-1]
            opts.update({k: v for k, v in (("samples", samples), ("positions", positions),
                                           ("distribution", distribution)) if v is not None})
            built.append(strategy_for(n_layers, **opts))
        elif name in DEPTH_AWARE:  # defaults scaled to the base model's depth (and heads)
            n_layers, n_heads = shape_of(tb.base_spec())
            module = import_module(f".strategies.{name}", __package__)
            args = (n_layers, n_heads) if name == "attention" else (n_layers,)
            built.append(module.strategy_for(*args, **seeded))
        else:
            built.append(make(name, **seeded))
    out = out or Path("results") / f"detect-{tb.root.name}"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        config = RunConfig(seed=seed, max_prompts=max_prompts or None)
        ev = run_detection(tb, built, out, pairs=_csv(pairs), config=config, progress=progress,
                           log=progress.console.print)
    _detect_table(ev, tb.root, len(ev.pair_prompts))
    store = ResultsStore.open(out) if match_confidence is not None or (plots and "noise" in ev.strategies()) else None
    if match_confidence is not None and store is not None:
        match = ConfidenceMatch(tol=match_confidence)
        matched = evaluate(store, list(ev.pair_prompts), seed=seed, strategies=ev.strategies(), match=match)
        kept = _matched_counts(matched, match)
        if kept:
            _detect_table(matched, tb.root, len(kept), f"confidence-matched prompts only (clean margins within "
                          f"{match_confidence:g} logit; kept per pair: {kept}; a pair with < {match.min_prompts} "
                          "is undecided)")
    if plots:
        from .plots import dose_response_figure, layer_figure, summary_figure, write_figures

        figs = {"summary": summary_figure(ev)}
        if "noise" in ev.strategies() and store is not None:
            figs |= {"noise_layers": layer_figure(ev, "noise"),
                     "noise_dose_response": dose_response_figure(store, "noise", list(ev.results[0].pair_scores))}
        paths, note = write_figures(figs, out / "figures")
        console.print(f"figures: {', '.join(str(p) for p in paths if p.suffix == '.html')} ({note})")
    console.print(f"results: {out} (rerun the same command to resume); wall time {time.perf_counter() - start:.0f} s")


@app.command()
@clean_errors
def report(
    out: Annotated[Path, typer.Argument(help="a results directory written by `detect` or an analysis script")],
    strategies: Annotated[str | None, typer.Option(help="comma-separated strategies (default: all stored)")] = None,
    pairs: Annotated[str | None, typer.Option(help="comma-separated pair ids (default: all stored)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap")] = 0,
    match_confidence: Annotated[float | None, typer.Option(
        help="evaluate on confidence-matched prompts only (clean margins within this many logits)")] = None,
    csv: Annotated[Path | None, typer.Option(help="also write every row of the table to this CSV file")] = None,
) -> None:
    """Every setting x score of stored results: accuracy, AUROC and 95% CIs, without loading a model.

    `detect` prints each strategy's chosen setting (and the best one, flagged as optimistic); this prints the
    whole sweep, e.g. S1 per layer x alpha or S3 per method x k. Read-only: safe while a run writes to OUT.
    """
    import csv as csv_module

    from .results import ResultsStore
    from .runner import ConfidenceMatch, evaluate

    _check_tolerance(match_confidence)
    store = ResultsStore.open(out)
    match = ConfidenceMatch(tol=match_confidence) if match_confidence is not None else None
    ev = evaluate(store, _csv(pairs), seed=seed, strategies=_csv(strategies), match=match)
    subtitle = ""
    if match is not None:
        kept = _matched_counts(ev, match)
        if not kept:
            raise typer.Exit(1)
        subtitle = f"confidence-matched prompts only (within {match_confidence:g} logit; kept per pair: {kept})"
    title = f"stored results in {out}: {len(ev.pair_prompts)} pairs, every setting (* = the strategy's chosen " \
            "setting and score, fixed in advance)"
    table = Table(title=title + (f"\n{subtitle}" if subtitle else ""))
    for col in ("strategy", "setting", "score", "accuracy (95% CI)", "AUROC (95% CI)", "decided"):
        table.add_column(col, no_wrap=col != "score")
    for r in ev.results:
        table.add_row(r.strategy, _short(r.setting), r.score + (" *" if r.is_primary else ""), *_metric_cells(r))
    _print_table(table)
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        with csv.open("w", newline="") as f:
            w = csv_module.writer(f)
            w.writerow(["strategy", "setting", "score", "primary", "accuracy", "accuracy_lo", "accuracy_hi",
                        "auroc", "auroc_lo", "auroc_hi", "decided", "pairs", "seconds"])
            for r in ev.results:
                m = r.summary
                w.writerow([r.strategy, r.setting.key, r.score, r.is_primary, m.accuracy, *m.accuracy_ci, m.auroc,
                            *m.auroc_ci, m.n_decided, m.n_pairs, round(r.seconds, 3)])
        console.print(f"table written to {csv}")


def _check_tolerance(match_confidence: float | None) -> None:
    """Refuse a negative (or NaN) --match-confidence before anything is computed."""
    if match_confidence is not None and not match_confidence >= 0:
        raise typer.BadParameter(f"{match_confidence} is not a non-negative number of logits",
                                 param_hint="--match-confidence")


def _matched_counts(ev: Any, match: Any) -> list[int]:
    """Matched prompts kept per pair, sorted; [] (having said so once, not as a table of NaN) when no pair has any."""
    kept = sorted(len(ids) for ids in ev.pair_prompts.values())
    if any(kept):
        return kept
    console.print(f"[yellow]confidence-matched: no pair has {match.min_prompts} prompts whose clean margins are "
                  f"within {match.tol:g} logit[/]; nothing to evaluate. More prompts per pair (--max-prompts, 0 = "
                  "all) or a larger tolerance give the matched set room.")
    return []


def _metric_cells(r: Any) -> tuple[str, str, str]:
    m = r.summary
    acc, auc = (t if t != "nan" else "[red]NaN[/]" for t in (m.accuracy_text(), m.auroc_text()))
    return acc, auc, f"{m.n_decided}/{m.n_pairs}"


def _detect_table(ev: Any, root: Path, n_pairs: int, subtitle: str = "") -> None:
    table = Table(title=f"detection on {root}: {n_pairs} pairs (* = the strategy's chosen score, fixed in advance; "
                        "accuracy CIs resample models, since pairs share them)"
                  + (f"\n{subtitle}" if subtitle else ""))
    for col in ("strategy", "setting", "score", "accuracy (95% CI)", "AUROC (95% CI)", "decided", "compute"):
        table.add_column(col, no_wrap=col != "score")
    notes = []
    for name in ev.strategies():
        primary = ev.primary(name)
        for r in ev.find(name, setting=primary.setting):
            table.add_row(name, _short(r.setting), r.score + (" *" if r.is_primary else ""), *_metric_cells(r),
                          f"{ev.seconds(name):.0f} s" if r.is_primary else "")
            if r.summary.describe_nan():
                notes.append(f"{name} {r.score}: {r.summary.describe_nan()}")
        if len({r.setting.key for r in ev.find(name)}) > 1:
            best = max(ev.find(name, primary.score), key=lambda r: (r.summary.accuracy == r.summary.accuracy,
                                                                     r.summary.accuracy))
            table.add_row(name, _short(best.setting), f"{best.score} (best setting: optimistic)", *_metric_cells(best),
                          "")
    _print_table(table)
    base = {n: ev.primary(n).summary.accuracy for n in ("blackbox", "random") if n in ev.strategies()}
    for name in ev.strategies():
        if name not in base and base:
            acc = ev.primary(name).summary.accuracy
            console.print(f"{name} ({ev.primary(name).score}): accuracy {acc:.2f} vs " +
                          ", ".join(f"{b} {a:.2f}" for b, a in base.items()))
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
