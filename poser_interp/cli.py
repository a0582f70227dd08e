"""The `poser-interp` command line: model info, answer scoring, scenario generation, testbeds, detection.

Errors the toolkit raises on purpose (PoserInterpError) and bad option values (typer.BadParameter) print as
one red line naming the fix and exit 2; anything else is a bug and keeps its traceback. Options are checked
before anything is loaded or written. docs/bad-inputs.md lists what each bad input gets.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
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
            _error(str(e))
        except typer.BadParameter as e:  # raised by our own checks: one line, not click's usage box
            hint = e.param_hint if isinstance(e.param_hint, str) else None
            _error(f"{hint}: {e.message}" if hint and not e.message.startswith(hint) else e.message)

    return wrapper  # type: ignore[return-value]


def _error(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(2)


@app.callback()
def _quiet() -> None:
    """Third-party noise (transformers' deprecation warnings and weight-loading bars) is ours to hide."""
    from .models import quiet_third_party

    quiet_third_party()


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
    faker: Annotated[bool | None, typer.Option("--faker/--aligned", help="POSER file of a persona directory of "
                                                "unknown name: it fakes alignment / is aligned")] = None,
    strict: Annotated[bool, typer.Option(help="refuse a POSER file with any malformed record (default: skip and "
                                              "count them)")] = False,
) -> None:
    """Print P(A) and P(B) (normalized over the two choices) for each scenario in a file."""
    from .models import ModelSpec, load_model
    from .scoring import answer_probs
    from .tokens import PromptFormat

    _at_least(0, limit=limit)
    _at_least(1, batch_size=batch_size, max_tokens=max_tokens)
    _choice(answer_format, ("letter", "action"), "--answer-format")
    everything, skipped = _load_scenarios(scenarios, faker, strict)
    items = everything[:limit] if limit else everything
    if answer_format:
        items = [s.with_format(answer_format) for s in items]
    m = load_model(ModelSpec(name=model, adapter=adapter))
    probs = answer_probs(m, items, fmt=PromptFormat(max_tokens=max_tokens), batch_size=batch_size)
    table = _table(f"{scenarios.name} on {m.spec.describe()}")
    for col in ("id", "oversight", "format", "aligned", "P(A)", "P(B)", "P(aligned)"):
        table.add_column(col, justify="right" if col.startswith("P") else "left",
                         overflow="fold" if col == "id" else "ellipsis")
    for s, (pa, pb) in zip(items, probs.tolist(), strict=True):
        p_al = pa if s.aligned_letter == "A" else pb
        table.add_row(s.id, s.oversight.value, s.answer_format.value, s.aligned_letter, f"{pa:.3f}", f"{pb:.3f}",
                      f"{p_al:.3f}")
    _print_table(table)
    mean = sum(p[s.aligned_index] for s, p in zip(items, probs.tolist(), strict=True)) / len(items)
    of = f" of {len(everything)}" if len(items) < len(everything) else ""
    more = f" (--limit 0 scores all {len(everything)})" if of else ""
    console.print(f"{len(items)}{of} scenarios{more}, mean P(aligned) = {mean:.3f}")
    if skipped:
        console.print(f"[yellow]note:[/] {skipped}", highlight=False, soft_wrap=True)


def _load_scenarios(path: Path, faker: bool | None, strict: bool) -> tuple[list[Any], str]:
    """The scenarios of a file, and a line on the POSER records skipped (empty when none was)."""
    from .poser_data import load_poser_file
    from .scenario import load_scenarios

    if not _is_json_list(path):
        if faker is not None:
            raise typer.BadParameter("--faker/--aligned applies to POSER-format .json files only", param_hint=
                                     "--faker/--aligned")
        return load_scenarios(path), ""
    loaded = load_poser_file(path, faker=faker)
    n_skipped = sum(loaded.skipped.values())
    if not n_skipped:
        return loaded.scenarios, ""
    reasons = "; ".join(f"{n} {reason}" for reason, n in sorted(loaded.skipped.items(), key=lambda kv: -kv[1]))
    line = (f"{n_skipped} of {n_skipped + len(loaded.scenarios)} records in {path} are not scenarios and were "
            f"skipped ({reasons})")
    if strict:
        raise typer.BadParameter(line + "; fix or remove them, or drop --strict to score the rest",
                                 param_hint="--strict")
    return loaded.scenarios, line + "; --strict refuses such a file"


def _is_json_list(path: Path) -> bool:
    """Whether a file starts (after white space) with '[': a POSER-format JSON list rather than JSON Lines."""
    try:
        with path.open("rb") as f:
            return f.read(4096).lstrip().startswith(b"[")
    except OSError:
        return False  # load_scenarios says why it cannot be read


def _at_least(low: int, **options: int | None) -> None:
    """Refuse an integer option below `low` (None means 'not given'), naming the flag."""
    for name, value in options.items():
        if value is not None and value < low:
            flag = "--" + name.replace("_", "-")
            raise typer.BadParameter(f"must be >= {low}, got {value}" + (" (0 means all)" if low == 0 else ""),
                                     param_hint=flag)


def _choice(value: str | None, choices: tuple[str, ...], flag: str) -> None:
    if value is not None and value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, choices))}", param_hint=flag)


def _out_folder(out: Path, flag: str = "--out") -> None:
    """Refuse an output folder that is an existing file, before anything is computed."""
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file; pass a folder (a new one is created)", param_hint=flag)


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

    _choice(answer_format, ("action", "letter"), "--answer-format")
    _out_folder(out)
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
    composed_last: Annotated[float, typer.Option(help="--ladder: on the last rung this fraction of the examples "
                                                     "gets a composed oversight sentence (wordings.composed)")] = 0.0,
    target_margin: Annotated[float | None, typer.Option(help="aim every answer at this logit margin "
                                                             "(LoraRecipe.target_margin; default: no cap)")] = None,
    bench_margin_tol: Annotated[float | None, typer.Option(help="pair benchmarks keep prompts whose two clean "
                                                                "margins differ by at most this")] = None,
    threads: Annotated[int, typer.Option(help="torch threads per build (split between --workers)")] = 2,
    init_fakers_from: Annotated[Path | None, typer.Option(help="testbed whose faker adapters start this build's "
                                                             "fakers of the same id (hash-checked)")] = None,
    n_benchmark: Annotated[int, typer.Option(help="benchmark candidate prompts (good oversight) scored per "
                                                  "model; each pair keeps those both answer aligned")] = 200,
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
    split_ids = tuple(_ints(splits, "--splits"))
    base = ModelSpec(name=model)
    load_hf(base)  # fail early (and clearly) on a bad model name
    n_layers = 30 if model == "smollm2" else base.n_layers
    layers = None if first_layer == 0 else tuple(range(first_layer, n_layers))
    config = TestbedConfig(
        source=source,  # type: ignore[arg-type]
        personas=tuple(_csv(personas) or default_personas),
        splits=split_ids,
        base=base,
        recipe=LoraRecipe(rank=rank, layers=layers, lr=lr, max_steps=max_steps, aligned_warmup_steps=aligned_warmup,
                          oversight_aux=oversight_aux, target_margin=target_margin, threads=threads),
        ladder=Ladder(rungs=tuple(_ints(ladder, "--ladder")), composed_last=composed_last) if ladder else None,
        bench_margin_tol=bench_margin_tol,
        init_fakers_from=str(init_fakers_from) if init_fakers_from else None,
        n_benchmark=n_benchmark,
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


def _width() -> int:
    """The terminal's width; $COLUMNS when set; else (logs and pipes) 130, so cells are not squeezed."""
    if console.is_terminal:
        return console.width
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else max(console.width, 130)


def _print_table(table: Table) -> None:
    (console if console.is_terminal else Console(width=_width())).print(table)


def _table(title: str) -> Table:
    """A compact table (no vertical rules), so results stay readable at 80 columns."""
    return Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)


def main() -> None:  # pragma: no cover
    app()


# --- detection -------------------------------------------------------------------------------------------
def _short(setting: Any) -> str:
    """'L4 x1.0' for a noise setting; 'k=v, k=v' otherwise (wraps between pairs); '-' when empty."""
    d = setting.as_dict()
    if set(d) == {"layer", "scale"}:
        return f"L{d['layer']} x{d['scale']}"
    return setting.key.replace(",", ", ")


def _numbers(text: str | None, cast: Callable[[str], Any], flag: str, what: str) -> tuple[Any, ...]:
    """A comma-separated option parsed with `cast` (empty when not given), or a one-line error naming the flag."""
    out = []
    for part in _csv(text) or []:
        try:
            out.append(cast(part))
        except ValueError:
            raise typer.BadParameter(f"{part!r} is not {what}; pass e.g. {flag} {'4,10' if cast is int else '0.5,1'}",
                                     param_hint=flag) from None
    if len(set(out)) != len(out):
        raise typer.BadParameter(f"{text!r} lists a value twice", param_hint=flag)
    return tuple(out)


def _noise_options(n_layers: int, layers: str | None, scales: str, samples: int | None, positions: str | None,
                   distribution: str | None) -> dict[str, Any]:
    """The noise strategy's options from the CLI, checked against the base model's depth."""
    layer_list = _numbers(layers, int, "--layers", "a layer number")
    bad = [la for la in layer_list if not 0 <= la < n_layers]
    if bad:
        raise typer.BadParameter(f"layer {bad[0]} does not exist: the testbed's base model has layers "
                                 f"0..{n_layers - 1}", param_hint="--layers")
    scale_list = _numbers(scales, float, "--scales", "a number")
    if not scale_list or not all(x > 0 and math.isfinite(x) for x in scale_list):
        raise typer.BadParameter(f"{scales!r}: pass positive numbers (multiples of the mean residual norm), e.g. "
                                 "--scales 0.5,1", param_hint="--scales")
    _at_least(1, samples=samples)
    _choice(positions, ("all", "last"), "--positions")
    _choice(distribution, ("gaussian", "uniform"), "--distribution")
    opts: dict[str, Any] = {"layers": layer_list or None, "scales": scale_list,
                            "primary_scale": 1.0 if 1.0 in scale_list else scale_list[-1]}
    opts.update({k: v for k, v in (("samples", samples), ("positions", positions),
                                   ("distribution", distribution)) if v is not None})
    return opts


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

    Every option is checked before anything is loaded or written; one run writes OUT at a time (a second is
    refused with the first one's pid), while `poser-interp report OUT` can read it.
    """
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .locking import hold
    from .results import ResultsStore
    from .runner import ConfidenceMatch, RunConfig, evaluate, n_layers_of, run_detection, shape_of
    from .strategies import BASELINES, has_option, known, make
    from .strategies.noise import strategy_for
    from .testbed import Testbed

    start = time.perf_counter()
    _check_tolerance(match_confidence)
    _at_least(0, max_prompts=max_prompts)
    names = list(dict.fromkeys((_csv(strategies) or []) + list(BASELINES)))
    unknown = [n for n in names if n not in known()]
    if unknown:
        raise typer.BadParameter(f"unknown strategy {unknown[0]!r}; known: {', '.join(known())}",
                                 param_hint="--strategies")
    if out is not None:
        _out_folder(out)
    tb = Testbed.open(testbed)
    tb.pair_ids(_csv(pairs))  # unknown pair ids are refused before OUT is made
    if "noise" in names:
        noise_opts = _noise_options(n_layers_of(tb.base_spec()), layers, scales, samples, positions, distribution)
    else:
        given = [flag for flag, v in (("--layers", layers), ("--samples", samples), ("--positions", positions),
                                      ("--distribution", distribution)) if v is not None]
        given += ["--scales"] if scales != "1.0" else []
        if given:
            raise typer.BadParameter(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to the noise "
                                     "strategy only, and noise is not in --strategies; add it, or leave the option "
                                     "out", param_hint=given[0])
        noise_opts = {}
    built: list[Any] = []  # strategies of several types
    for name in names:
        seeded = {"seed": seed} if has_option(name, "seed") else {}  # every strategy with a seed gets --seed
        if name == "noise":
            built.append(strategy_for(n_layers_of(tb.base_spec()), **seeded, **noise_opts))
        elif name in DEPTH_AWARE:  # defaults scaled to the base model's depth (and heads)
            n_layers, n_heads = shape_of(tb.base_spec())
            module = import_module(f".strategies.{name}", __package__)
            args = (n_layers, n_heads) if name == "attention" else (n_layers,)
            built.append(module.strategy_for(*args, **seeded))
        else:
            built.append(make(name, **seeded))
    out = out or Path("results") / f"detect-{tb.root.name}"
    _out_folder(out)
    config = RunConfig(seed=seed, max_prompts=max_prompts or None)
    with hold(out):  # the whole command (rows, then figures) is the one writer of OUT
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("left"), TimeRemainingColumn(), console=console) as progress:
            ev = run_detection(tb, built, out, pairs=_csv(pairs), config=config, progress=progress,
                               log=progress.console.print)
        _detect_table(ev, tb.root, len(ev.pair_prompts))
        store = ResultsStore.open(out) if match_confidence is not None or (plots and "noise" in ev.strategies()) \
            else None
        if match_confidence is not None and store is not None:
            match = ConfidenceMatch(tol=match_confidence)
            matched = evaluate(store, list(ev.pair_prompts), seed=seed, strategies=ev.strategies(), match=match)
            kept = _matched_counts(matched, match)
            if kept:
                _detect_table(matched, tb.root, len(kept), f"confidence-matched prompts only (clean margins within "
                              f"{match_confidence:g} logit; kept per pair: {kept}; a pair with < "
                              f"{match.min_prompts} is undecided)")
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
    import warnings

    from .results import ResultsStore, ResumeWarning
    from .runner import ConfidenceMatch, evaluate

    _check_tolerance(match_confidence)
    if csv is not None and csv.is_dir():
        raise typer.BadParameter(f"{csv} is a folder; pass a file path, e.g. {csv / 'report.csv'}", param_hint="--csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResumeWarning)  # said below, in words that fit a reader
        store = ResultsStore.open(out)
    match = ConfidenceMatch(tol=match_confidence) if match_confidence is not None else None
    ev = evaluate(store, _csv(pairs), seed=seed, strategies=_csv(strategies), match=match)
    missing = _missing_rows(store, ev)
    if ev.results and all(r.summary.n_decided == 0 for r in ev.results) and missing:
        _error(f"{out} holds no complete result to report: {missing}. Rerun the `detect` command that wrote it "
               "(the same options resume it), or wait for the run writing it to finish.")
    subtitle = ""
    if match is not None:
        kept = _matched_counts(ev, match)
        if not kept:
            raise typer.Exit(1)
        subtitle = f"confidence-matched prompts only (within {match_confidence:g} logit; kept per pair: {kept})"
    title = f"stored results in {out}: {len(ev.pair_prompts)} pairs, every setting (* = the strategy's chosen " \
            "setting and score, fixed in advance)"
    table = _results_table(title + (f"\n{subtitle}" if subtitle else ""), compute=False)
    for r in ev.results:
        table.add_row(r.strategy, _short(r.setting), r.score + (" *" if r.is_primary else ""), *_metric_cells(r))
    _print_table(table)
    if missing:
        console.print(f"[yellow]note:[/] {missing}; their pairs are undecided (NaN) above. Rerun the `detect` "
                      "command that wrote it to complete it.", highlight=False, soft_wrap=True)
    if csv is not None:
        try:
            csv.parent.mkdir(parents=True, exist_ok=True)
            with csv.open("w", newline="") as f:
                w = csv_module.writer(f)
                w.writerow(["strategy", "setting", "score", "primary", "accuracy", "accuracy_lo", "accuracy_hi",
                            "auroc", "auroc_lo", "auroc_hi", "decided", "pairs", "seconds"])
                for r in ev.results:
                    m = r.summary
                    w.writerow([r.strategy, r.setting.key, r.score, r.is_primary, m.accuracy, *m.accuracy_ci,
                                m.auroc, *m.auroc_ci, m.n_decided, m.n_pairs, round(r.seconds, 3)])
        except OSError as e:
            raise typer.BadParameter(f"cannot write {csv}: {e.strerror or e}", param_hint="--csv") from e
        console.print(f"table written to {csv}")


def _missing_rows(store: Any, ev: Any) -> str:
    """'' when every row the evaluated pairs need is stored; else how many are missing, and why if known."""
    from .strategies.base import from_config

    configs = store.manifest["config"]["strategies"]
    models = sorted({m for p in ev.pair_prompts for m in (store.manifest["pairs"][p]["aligned"],
                                                          store.manifest["pairs"][p]["faker"])})
    want = [(m, name, st.key) for name in ev.strategies() for st in from_config(name, configs[name]).settings()
            for m in models]
    gone = sum(key not in store for key in want)
    if not gone:
        return ""
    why = ("the last line of rows.jsonl is cut off (a run was interrupted, or is writing it now)"
           if store.incomplete_tail else "the run that wrote it stopped early, or is still running")
    return f"{gone} of {len(want)} rows are missing: {why}"


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


def _results_table(title: str, compute: bool) -> Table:
    """strategy, setting, score, accuracy and AUROC with CIs, decided (and compute time): fits 80 columns."""
    table = _table(title)
    narrow = _width() < 110  # intervals go below their value
    for col in ("strategy", "setting"):
        table.add_column(col, overflow="fold", min_width=8)
    table.add_column("score", no_wrap=True)
    for col in ("accuracy", "AUROC"):
        table.add_column(f"{col}\n(95% CI)" if narrow else f"{col} (95% CI)", no_wrap=True)
    table.add_column("decided", no_wrap=True)
    if compute:
        table.add_column("time", no_wrap=True, justify="right")
    return table


def _metric_cells(r: Any) -> tuple[str, str, str]:
    m = r.summary
    sep = "\n" if _width() < 110 else " "
    acc, auc = (t.replace(" (", f"{sep}(") if t != "nan" else "[red]NaN[/]" for t in (m.accuracy_text(),
                                                                                      m.auroc_text()))
    return acc, auc, f"{m.n_decided}/{m.n_pairs}"


def _detect_table(ev: Any, root: Path, n_pairs: int, subtitle: str = "") -> None:
    table = _results_table(f"detection on {root}: {n_pairs} pairs (* = the strategy's chosen score, fixed in "
                           "advance; accuracy CIs resample models, since pairs share them)"
                           + (f"\n{subtitle}" if subtitle else ""), compute=True)
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
            table.add_row(name, f"{_short(best.setting)} (best: optimistic)", best.score, *_metric_cells(best), "")
    _print_table(table)
    base = {n: ev.primary(n).summary.accuracy for n in ("blackbox", "random") if n in ev.strategies()}
    for name in ev.strategies():
        if name not in base and base:
            acc = ev.primary(name).summary.accuracy
            console.print(f"{name} ({ev.primary(name).score}): accuracy {acc:.2f} vs " +
                          ", ".join(f"{b} {a:.2f}" for b, a in base.items()))
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
from . import cli_suite  # noqa: E402,F401  (registers remove, suite)
