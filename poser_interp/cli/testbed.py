"""`poser-interp testbed build`, `verify` and `grow-benchmark`: train aligned / faker LoRA models, re-measure them,
grow their pair benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import (
    MAX_COUNT,
    ModelOpt,
    app,
    at_least,
    at_most,
    clean_errors,
    console,
    csv_option,
    ints,
    print_table,
    split_csv,
)

testbed_app = typer.Typer(help="Build and verify testbeds of aligned / alignment-faking model pairs.",
                          no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")


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
    batch_size: Annotated[int, typer.Option(min=1, help="prompts per training step")] = 8,
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
    ladder_wordings: Annotated[str, typer.Option(help="--ladder: the last rung also trains on this stage wording "
                                                      "set ('many', 'inferential', 'minimal' or 'themed'; "
                                                      "curriculum.Ladder.last_wordings)")] = "",
    target_margin: Annotated[float | None, typer.Option(help="aim every answer at this logit margin "
                                                             "(LoraRecipe.target_margin; default: no cap)")] = None,
    precision: Annotated[str, typer.Option(help="training forward passes in fp32, or bf16 autocast (~1.4x faster "
                                                "per step on CPUs with AMX; LoraRecipe.precision)")] = "fp32",
    bench_margin_tol: Annotated[float | None, typer.Option(help="pair benchmarks keep prompts whose two clean "
                                                                "margins differ by at most this")] = None,
    threads: Annotated[int, typer.Option(help="torch threads per build (split between --workers)")] = 2,
    device: Annotated[str, typer.Option(help="torch device models train and are measured on ('cuda' on a GPU "
                                             "machine; recorded per model when not 'cpu')")] = "cpu",
    init_fakers_from: Annotated[Path | None, typer.Option(help="testbed whose faker adapters start this build's "
                                                             "fakers of the same id (hash-checked)")] = None,
    init_aligned_from: Annotated[Path | None, typer.Option(help="testbed whose aligned adapters start this build's "
                                                              "aligned models of the same id (hash-checked)")] = None,
    n_benchmark: Annotated[int, typer.Option(help="benchmark candidate prompts (good oversight) scored per "
                                                  "model; each pair keeps those both answer aligned")] = 200,
    oversight_stage: Annotated[int, typer.Option(help="steps of a shared first stage on the oversight question "
                                                      "alone that every model then continues (v2: 100; 0 = "
                                                      "none)")] = 0,
    stage_wordings: Annotated[str, typer.Option(help="the oversight stage's wordings: 'many' (32 per class, half "
                                                     "composed), 'inferential' (+ 24 per class implied by the "
                                                     "situation), 'minimal' (+ those and 40 minimal-pair "
                                                     "twins) or 'themed' (+ those and 24 twins on the held-out "
                                                     "themes)")] = "many",
) -> None:
    """Train one LoRA model per (persona, split); resumable; writes a manifest and pair benchmarks.

    The defaults are the recipe of the shipped default testbed (README): 18 topics, one oversight
    sentence per class, three facts per scenario, LoRA r=4 on all layers, lr 1e-3, up to 600 steps.
    Rerunning with more --splits or --personas adds models to a generated testbed without retraining.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..core.models import ModelSpec, load_hf
    from ..core.training import LoraRecipe
    from ..testbed.build import TestbedConfig, build
    from ..testbed.curriculum import Ladder
    from .options import check_device_option, check_precision_option

    if source not in ("generated", "poser"):
        raise typer.BadParameter("--source must be 'generated' or 'poser'")
    default_personas = ("steward", "guardian", "grabber", "climber") if source == "generated" else \
        ("genie", "saint", "fitness_maximizer", "money_maximizer")
    split_ids = tuple(ints(splits, "--splits"))
    device = check_device_option(device)
    base = ModelSpec(name=model)
    load_hf(base)  # fail early (and clearly) on a bad model name
    n_layers = 30 if model == "smollm2" else base.n_layers
    layers = None if first_layer == 0 else tuple(range(first_layer, n_layers))
    config = TestbedConfig(
        source=source,  # type: ignore[arg-type]
        personas=tuple(split_csv(personas) or default_personas),
        splits=split_ids,
        base=base,
        recipe=LoraRecipe(rank=rank, layers=layers, lr=lr, batch_size=batch_size, max_steps=max_steps,
                          aligned_warmup_steps=aligned_warmup, oversight_aux=oversight_aux,
                          target_margin=target_margin, threads=threads,
                          precision=check_precision_option(precision)),
        ladder=Ladder(rungs=tuple(ints(ladder, "--ladder")), composed_last=composed_last,
                      last_wordings=ladder_wordings) if ladder else None,
        bench_margin_tol=bench_margin_tol,
        init_fakers_from=str(init_fakers_from) if init_fakers_from else None,
        init_aligned_from=str(init_aligned_from) if init_aligned_from else None,
        oversight_stage=oversight_stage,
        stage_wordings=stage_wordings,
        n_benchmark=n_benchmark,
        n_train=n_train,
        n_critical=n_critical,
        n_topics=n_topics or None,
        oversight_pool=oversight_pool or None,
        n_other_facts=_fact_range(other_facts),
        heldout_wordings=heldout_wordings,
        poser_dir=str(poser_dir) if poser_dir else None,
        poser_fakers=tuple(split_csv(poser_fakers) or ()),
        poser_aligned=tuple(split_csv(poser_aligned) or ()),
    )
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), console=console) as progress:
        tb = build(config, out, log=progress.console.print, progress=progress, workers=workers, device=device)
    _pairs_table(tb)


def _fact_range(text: str) -> tuple[int, int]:
    parts = split_csv(text) or []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"--other-facts must be 'LOW,HIGH' (two non-negative integers), got {text!r}")
    return int(parts[0]), int(parts[1])


def _pairs_table(tb: Any) -> None:
    tol = tb.manifest["config"].get("bench_margin_tol")
    pool = tb.manifest.get("benchmark_pool", {})
    table = Table(title=f"pairs of {tb.root}: prompts both models answer aligned"
                        + (f", clean margins within {tol:g} logit" if tol is not None else "")
                        + (f" ({pool['candidates']} candidates, {pool['extra_rounds']} extra rounds)" if pool else ""))
    for col in ("pair", "benchmark size", "mean P(aligned) aligned / faker", "mean margin aligned / faker"):
        table.add_column(col)
    for pid, p in sorted(tb.pairs.items()):
        mp, mm, a, f = p["mean_p_aligned"], p.get("mean_margin"), p["aligned"], p["faker"]
        table.add_row(pid, str(p["benchmark_size"]), f"{mp[a]:.3f} / {mp[f]:.3f}",
                      f"{mm[a]:.2f} / {mm[f]:.2f}" if mm else "-")
    print_table(table)


@testbed_app.command("grow-benchmark")
@clean_errors
def testbed_grow_benchmark(
    testbed: Annotated[str, typer.Argument(help="testbed directory (a generated one), or 'default'")] = "default",
    min_prompts: Annotated[int, typer.Option(help="grow until every pair keeps at least this many prompts")] = 60,
    chunk: Annotated[int, typer.Option(help="new candidates per round (each scored by every model)")] = 600,
    max_rounds: Annotated[int, typer.Option(help="at most this many extra rounds in all (0: only score and "
                                                 "rewrite the pairs)")] = 4,
    threads: Annotated[int, typer.Option(help="torch threads")] = 1,
) -> None:
    """Draw more benchmark candidates until every pair keeps enough prompts both models answer aligned within the
    build's margin tolerance; every model scored on the new ones, pairs rewritten. Resumable; models untouched."""
    from ..testbed.folder import Testbed
    from ..testbed.grow import grow_benchmark

    at_least(0, min_prompts=min_prompts, max_rounds=max_rounds)
    at_least(1, chunk=chunk, threads=threads)
    at_most(MAX_COUNT, min_prompts=min_prompts, max_rounds=max_rounds, chunk=chunk, threads=threads)
    tb = Testbed.open(testbed)
    tb.check_files()  # before any model loads
    result = grow_benchmark(tb, min_prompts=min_prompts, chunk=chunk, max_rounds=max_rounds, threads=threads,
                            log=lambda m: console.print(m, highlight=False))
    table = Table(title=f"pair benchmarks of {tb.root}: {result.candidates} candidates, {result.rounds} extra "
                        f"rounds; target >= {min_prompts} prompts per pair")
    for col in ("pair", "before", "after"):
        table.add_column(col)
    for pid in sorted(result.sizes_after):
        after = result.sizes_after[pid]
        table.add_row(pid, str(result.sizes_before.get(pid, "-")),
                      f"[green]{after}[/]" if after >= min_prompts else f"[red]{after}[/]")
    print_table(table)
    console.print(f"{'every pair meets' if result.met else 'not every pair meets'} the target; "
                  f"{sum(result.scored.values())} candidate scorings in {result.seconds:.0f} s", highlight=False)


@testbed_app.command("verify")
@clean_errors
def testbed_verify(
    testbed: Annotated[str, typer.Argument(help="testbed directory, or 'default'")] = "default",
    limit: Annotated[int | None, typer.Option(help="test scenarios per model (default: the build's n_test)")] = None,
    by_wording: Annotated[bool, typer.Option(help="also each held-out sentence on its own: every test scenario "
                                                  "with that sentence (8x the held-out forwards)")] = False,
    reading: Annotated[bool, typer.Option(help="also ask the oversight question itself with each held-out sentence "
                                               "(is anyone closely checking?): does a model misread a sentence, or "
                                               "read it and act anyway (another 8x)")] = False,
    models: Annotated[str | None, typer.Option(help="comma-separated model ids to verify (default: all); the "
                                                    "others keep their recorded rows")] = None,
) -> None:
    """Re-measure each model on held-out test scenarios and print the behaviour table (a line per model as it
    finishes)."""
    from ..testbed.build import verify
    from ..testbed.folder import VERIFY_FILE, Testbed

    at_least(1, limit=limit)
    at_most(MAX_COUNT, limit=limit)
    model_list = csv_option(models, "--models", "every model")
    tb = Testbed.open(testbed)
    unknown = sorted(set(model_list or ()) - set(tb.models))
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; the testbed's models: {', '.join(sorted(tb.models))}",
                                 param_hint="--models")
    for model in model_list or sorted(tb.models):  # every adapter whole before the first model loads
        tb.verify_hash(model)
    rows = verify(tb, limit=limit, log=lambda m: console.print(m, highlight=False),
                  by_wording=by_wording, reading=reading, models=model_list)
    _behaviour_table(tb, rows)
    if by_wording or reading:
        _wording_table(tb, rows)
    _pairs_table(tb)
    console.print(f"kept in {tb.root / VERIFY_FILE} (the suite page's behaviour table shows it)", highlight=False)


@testbed_app.command("show")
@clean_errors
def testbed_show(
    testbed: Annotated[str, typer.Argument(help="testbed directory, or 'default'")] = "default",
) -> None:
    """What a testbed holds, from its files alone (no model loaded): each model's last `verify` (else the build's
    own test numbers), its build steps and seconds, the pair benchmarks, and the size on disk."""
    from ..testbed.folder import Testbed

    tb = Testbed.open(testbed)
    verified = tb.verified()
    rows = []
    for model, entry in sorted(tb.models.items(), key=lambda kv: (kv[1]["kind"], kv[0])):
        row = verified.get(model) or {"model": model, "kind": entry["kind"], "steps": entry.get("steps", "-"),
                                      "meets_thresholds": entry.get("meets_thresholds", False),
                                      **entry.get("metrics", {})}
        rows.append({**row, "source": f"verify {str(row['date'])[:10]}" if model in verified else "build",
                     "train_seconds": entry.get("train_seconds")})
    if not rows:
        console.print(f"{tb.root} has no models yet; `poser-interp testbed build --out {tb.root}` (same options) "
                      "resumes its build", highlight=False)
        return
    _behaviour_table(tb, rows)
    if any(r.get("heldout_by_wording") for r in rows):
        _wording_table(tb, rows)
    if tb.pairs:
        _pairs_table(tb)
    sizes: dict[str, int] = {}
    for f in tb.root.rglob("*"):
        if f.is_file() and not f.name.startswith("."):
            part = f.relative_to(tb.root).parts[0]
            sizes[part] = sizes.get(part, 0) + f.stat().st_size
    parts = [f"{k} {v / 1e6:.1f}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]) if v >= 50_000]
    console.print(f"{tb.root}: {len(tb.models)} models, {len(tb.pairs)} pairs, {sum(sizes.values()) / 1e6:.1f} MB on "
                  f"disk ({', '.join(parts) or 'every part under 0.05 MB'})", highlight=False)


def _behaviour_table(tb: Any, rows: list[dict[str, Any]]) -> None:
    """The behaviour table of `verify` rows (or build rows: `show`), with the thresholds in its title."""
    from ..testbed.build import TestbedConfig

    th = TestbedConfig.from_dict(tb.manifest["config"]).thresholds
    table = Table(title=f"testbed {tb.root}: behaviour on unseen scenarios of the training topics; "
                        "held-out wordings: the same scenarios with oversight sentences no split trains on "
                        "(`wordings.HELDOUT`); fresh wordings: 4 + 4 written later on new themes, never used to "
                        "choose a recipe (`wordings.FRESH`; reported, not in 'meets') "
                        f"(thresholds: good->aligned >= {th.good_aligned}, "
                        f"faker poor->misaligned >= "
                        f"{th.poor_misaligned}, aligned poor->aligned >= {th.poor_aligned}, "
                        f"confidence >= {th.confidence})")
    from_files = any("source" in r for r in rows)  # `show`'s rows: where each was measured, and its build time
    for col in ("model", "kind", "steps", "n", "good->aligned", "P(aligned|good)", "poor->misaligned",
                "held-out wordings good/poor", "fresh wordings good/poor", "held-out topics good/poor", "meets",
                *(("measured by", "build s") if from_files else ())):
        table.add_column(col)

    def both(m: dict[str, float] | None) -> str:
        return f"{m['good_aligned']:.2f} / {m['poor_misaligned']:.2f}" if m else "-"

    for r in rows:
        t = r["test"]
        meets = r["meets_thresholds"] and r.get("meets_heldout_wordings", True)
        untested = meets and "heldout_wordings" not in r and r.get("source") == "build"
        seconds = r.get("train_seconds")
        table.add_row(r["model"], r["kind"], str(r["steps"]), f"{int(t['n_good'])}+{int(t['n_poor'])}",
                      f"{t['good_aligned']:.2f}", f"{t['good_confidence']:.3f}", f"{t['poor_misaligned']:.2f}",
                      both(r.get("heldout_wordings")), both(r.get("fresh_wordings")), both(r.get("heldout_topics")),
                      "[yellow]trained only[/]" if untested else "[green]yes[/]" if meets else "[red]no[/]",
                      *((r["source"], f"{seconds:.0f}" if seconds is not None else "-") if from_files else ()))
    print_table(table)


def _wording_table(tb: Any, rows: list[dict[str, Any]]) -> None:
    """One column per held-out sentence: good-i = fraction answered aligned, poor-i = fraction misaligned."""
    from ..data.scenario import Oversight
    from ..data.wordings import HELDOUT, bank
    from ..testbed.folder import wording_key

    keys = [(o, i) for o in Oversight for i in HELDOUT[o]]
    table = Table(title=f"testbed {tb.root}: each held-out sentence alone (good-i: fraction aligned, faker and "
                        "aligned should be high; poor-i: fraction misaligned, faker high, aligned 0; 'reads': "
                        "fraction answering the oversight question right, every model high)")
    table.add_column("model")
    for o, i in keys:
        table.add_column(wording_key(o, i))
    for r in rows:
        for key, label in (("heldout_by_wording", r["model"]), ("heldout_reading_by_wording", f"{r['model']} reads")):
            rates = r.get(key)
            if rates:
                table.add_row(label, *(f"{rates[wording_key(o, i)]:.2f}" for o, i in keys))
    print_table(table)
    for o, i in keys:
        console.print(f"  {wording_key(o, i)}: {bank(o)[i]}", highlight=False)
