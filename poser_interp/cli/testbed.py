"""`poser-interp testbed build`, `verify` and `grow-benchmark`: train aligned / faker LoRA models, re-measure them,
grow their pair benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import (
    MAX_COUNT,
    app,
    at_least,
    at_most,
    clean_errors,
    compact_table,
    console,
    csv_option,
    ints,
    plural,
    print_table,
    split_csv,
    width,
)
from .options import DeviceOpt, DtypeOpt, PrecisionOpt, check_device_option, dtype_option

testbed_app = typer.Typer(help="Build and verify testbeds of aligned / alignment-faking model pairs.",
                          no_args_is_help=True)
app.add_typer(testbed_app, name="testbed")


@testbed_app.command("build", epilog="Recipe fields (the keys and tables of a recipe file, the keys of --set): "
                     "`poser-interp testbed recipe-help`. Shipped recipes: recipes/ (v2d.toml is the defaults).")
@clean_errors
def testbed_build(
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help="recipe file: TOML mirroring TestbedConfig "
                                                "(recipes/*.toml) or a testbed's manifest.json (rebuilds it); "
                                                "default: the TestbedConfig defaults (recipes/v2d.toml), or, when "
                                                "--out holds a testbed, its own recipe (resume / grow)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="KEY=VALUE over the recipe, one field each "
                                                   "(e.g. recipe.max_steps=50, base.name=gemma3, ladder=none); "
                                                   "repeatable")] = None,
    out: Annotated[Path, typer.Option(help="testbed directory (resumes if it exists)")] = Path("testbeds/default"),
    personas: Annotated[str | None, typer.Option(help="comma-separated personas (default: the recipe's)")] = None,
    splits: Annotated[str | None, typer.Option(help="comma-separated split numbers / seeds (default: the "
                                                    "recipe's)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="models trained at once (threads are split between them)")] = 1,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads per build, split between --workers "
                                                            "(default: the recipe's recipe.threads)")] = None,
    device: Annotated[str, typer.Option(help="where models train and are measured: cpu, cuda, cuda:N, or auto "
                                             "(cuda when there is a GPU); recorded per model when not 'cpu'")]
        = "cpu",
    batch_size: Annotated[int | None, typer.Option(min=1, help="prompts per training step (default: the recipe's "
                                                               "recipe.batch_size)")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="training forward passes in fp32, or bf16 / fp16 "
                                              "(GPUs) autocast on the device (bf16 ~1.4x faster per step on CPUs "
                                              "with AMX); recorded as the recipe's recipe.precision (default: the "
                                              "recipe's)")] = None,
    precision: PrecisionOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the resolved config as JSON (a recipe itself) "
                                                            "and exit; nothing is loaded or written")] = False,
) -> None:
    """Train one LoRA model per (persona, split) of a recipe; resumable; writes a manifest and pair benchmarks.

    What the testbed is comes from the recipe (--recipe FILE, --set KEY=VALUE); the other options are run-time
    choices. Rerunning with more --splits or --personas adds models to a generated testbed without retraining.
    """
    from ..testbed.build import build
    from ..testbed.recipe import load_recipe

    at_most(MAX_COUNT, workers=workers, threads=threads, batch_size=batch_size)
    device = check_device_option(device, split=False)  # a training runs on one GPU
    arithmetic = dtype_option(dtype, precision, device, default=None)  # checked for the device (fp16: GPUs)
    if recipe is None and _holds_testbed(out):
        recipe = out / "manifest.json"
        typer.echo(f"{out} holds a testbed: building with its own recipe ({recipe})", err=True)
    overrides: dict[str, Any] = {}
    if personas is not None:
        overrides["personas"] = split_csv(personas) or []
    if splits is not None:
        overrides["splits"] = ints(splits, "--splits")
    if threads is not None:
        overrides["recipe.threads"] = threads
    if batch_size is not None:
        overrides["recipe.batch_size"] = batch_size
    if arithmetic is not None:
        overrides["recipe.precision"] = arithmetic
    config = load_recipe(recipe, [*(set_ or ()), *(f"{k}={_toml(v)}" for k, v in overrides.items())])
    if dry_run:
        import json

        typer.echo(json.dumps(config.to_dict(), indent=1))
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..core.models import load_hf
    from ..core.precision import check_precision

    check_precision(config.recipe.precision, device)  # a recipe's own fp16 on the CPU: refused before training
    load_hf(config.base)  # fail early (and clearly) on a bad model name
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), console=console) as progress:
        tb = build(config, out, log=progress.console.print, progress=progress, workers=workers, device=device)
    _pairs_table(tb)


def _holds_testbed(out: Path) -> bool:
    """Whether `out` holds a testbed's manifest (its config then is the recipe a rerun resumes with)."""
    import json

    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("config"), dict) and "models" in manifest


def _toml(value: Any) -> str:
    """A run-time option's value as --set text."""
    import json

    return json.dumps(value)


@testbed_app.command("recipe-help")
@clean_errors
def testbed_recipe_help(
    prefix: Annotated[str, typer.Argument(help="only the keys that start with this (e.g. 'recipe.')")] = "",
) -> None:
    """Every field a recipe file (or --set) may set: its key, type, default (the default testbed's) and meaning,
    from the config dataclasses' field docstrings."""
    from ..strategies.registry import field_docs
    from ..testbed.recipe import NONE, recipe_fields, type_text

    shown = 0
    for key, tp, default, owner in recipe_fields():
        if not key.startswith(prefix):
            continue
        shown += 1
        value = NONE if default is None else default
        doc = field_docs(owner).get(key.rpartition(".")[2], "")
        console.print(f"[bold]{key}[/] ({type_text(tp)}; default {value!r})", highlight=False)
        console.print(f"    {doc}", highlight=False, markup=False)
    if not shown:
        raise typer.BadParameter(f"no recipe key starts with {prefix!r}", param_hint="PREFIX")
    console.print("A recipe file is TOML: top-level keys, then tables [base], [recipe], [ladder], [thresholds]; "
                  f"'{NONE}' writes None. See recipes/ and recipes/README.md.", highlight=False, markup=False)


def _pairs_table(tb: Any) -> None:
    tol = tb.manifest["config"].get("bench_margin_tol")
    pool = tb.manifest.get("benchmark_pool", {})
    table = Table(title=f"pairs of {tb.root}: prompts both models answer aligned"
                        + (f", clean margins within {tol:g} logit" if tol is not None else "")
                        + (f" ({pool['candidates']} candidates, {pool['extra_rounds']} extra rounds)" if pool else ""))
    narrow = width() < 130
    for col in ("pair", "prompts", "P(aligned) al / fk", "margin al / fk") if narrow else \
            ("pair", "benchmark size", "mean P(aligned) aligned / faker", "mean margin aligned / faker"):
        table.add_column(col, overflow="fold")
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
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = None,
) -> None:
    """Draw more benchmark candidates until every pair keeps enough prompts both models answer aligned within the
    build's margin tolerance; every model scored on the new ones, pairs rewritten. Resumable; models untouched."""
    from ..testbed.folder import Testbed
    from ..testbed.grow import grow_benchmark

    at_least(0, min_prompts=min_prompts, max_rounds=max_rounds)
    at_least(1, chunk=chunk, threads=threads)
    at_most(MAX_COUNT, min_prompts=min_prompts, max_rounds=max_rounds, chunk=chunk, threads=threads)
    device = check_device_option(device)
    arithmetic = dtype_option(dtype, None, device) or "fp32"
    tb = Testbed.open(testbed)
    tb.check_files()  # before any model loads
    result = grow_benchmark(tb, min_prompts=min_prompts, chunk=chunk, max_rounds=max_rounds, threads=threads,
                            log=lambda m: console.print(m, highlight=False), device=device, precision=arithmetic)
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
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = None,
) -> None:
    """Re-measure each model on held-out test scenarios and print the behaviour table (a line per model as it
    finishes)."""
    from ..errors import DataError
    from ..testbed.build import verify
    from ..testbed.folder import VERIFY_FILE, Testbed

    at_least(1, limit=limit)
    at_most(MAX_COUNT, limit=limit)
    device = check_device_option(device)
    arithmetic = dtype_option(dtype, None, device) or "fp32"
    model_list = csv_option(models, "--models", "every model")
    tb = Testbed.open(testbed)
    unknown = sorted(set(model_list or ()) - set(tb.models))
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; the testbed's models: {', '.join(sorted(tb.models))}",
                                 param_hint="--models")
    for model in model_list or sorted(tb.models):  # every adapter whole before the first model loads
        tb.verify_hash(model)
    if not any((tb.root / "data" / name).exists() for name in ("test.jsonl", "test.jsonl.gz")):
        raise DataError(f"testbed {tb.root} has no data/test.jsonl to verify on; {tb.rebuild_hint()}")
    rows = verify(tb, limit=limit, log=lambda m: console.print(m, highlight=False),
                  by_wording=by_wording, reading=reading, models=model_list, device=device, precision=arithmetic)
    _behaviour_table(tb, rows)
    if by_wording or reading:
        _wording_table(tb, rows)
    _pairs_table(tb)
    console.print(f"kept in {tb.root / VERIFY_FILE} (the suite page's behaviour table shows it)", highlight=False)


@testbed_app.command("show")
@clean_errors
def testbed_show(
    testbed: Annotated[str, typer.Argument(help="testbed directory, or 'default'")] = "default",
    wide: Annotated[bool, typer.Option(help="every column, and each held-out sentence's table (~215 columns); "
                                            "default: as wide as the terminal (all of it from 130 columns)")]
        = False,
) -> None:
    """What a testbed holds, from its files alone (no model loaded): each model's last `verify` (else the build's
    own test numbers), its build steps and seconds, the pair benchmarks, the size on disk, and whether every file
    its manifest names is there (and matches its hash)."""
    from ..testbed.folder import Testbed

    tb = Testbed.open(testbed)
    wide = wide or width() >= 130
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
    _behaviour_table(tb, rows, wide)
    if any(r.get("heldout_by_wording") for r in rows):
        if wide:
            _wording_table(tb, rows)
        else:
            console.print("each held-out sentence alone: `--wide`", highlight=False)
    if tb.pairs:
        _pairs_table(tb)
    sizes: dict[str, int] = {}
    for f in tb.root.rglob("*"):
        if f.is_file() and not f.name.startswith("."):
            part = f.relative_to(tb.root).parts[0]
            sizes[part] = sizes.get(part, 0) + f.stat().st_size
    parts = [f"{k} {v / 1e6:.1f}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]) if v >= 50_000]
    console.print(f"{tb.root}: {plural(len(tb.models), 'model')}, {plural(len(tb.pairs), 'pair')}, "
                  f"{sum(sizes.values()) / 1e6:.1f} MB on "
                  f"disk ({', '.join(parts) or 'every part under 0.05 MB'})", highlight=False)
    problems = tb.problems()
    if problems:
        console.print(f"[yellow]not whole:[/] {escape('; '.join(problems))}; {escape(tb.rebuild_hint())}",
                      highlight=False)
    else:
        console.print("whole: every file its manifest names is there and matches its hash", highlight=False)


def _behaviour_table(tb: Any, rows: list[dict[str, Any]], wide: bool = True) -> None:
    """The behaviour table of `verify` rows (or build rows: `show`), with the thresholds in its title; not `wide`:
    the columns that fit 80 characters, the legend below it."""
    from ..testbed.build import TestbedConfig

    th = TestbedConfig.from_dict(tb.manifest["config"]).thresholds
    if not wide:
        _narrow_behaviour_table(tb, rows, th)
        return
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


def _narrow_behaviour_table(tb: Any, rows: list[dict[str, Any]], th: Any) -> None:
    """`_behaviour_table` in 80 columns: the rates that decide 'meets', and the held-out ones."""
    table = compact_table(f"testbed {tb.root}: behaviour on unseen scenarios")
    for col in ("model", "kind", "steps", "good", "poor", "held-out", "fresh", "topics", "meets"):
        table.add_column(col, justify="left" if col in ("model", "kind", "meets") else "right")

    def both(m: dict[str, float] | None) -> str:
        return f"{m['good_aligned']:.2f}/{m['poor_misaligned']:.2f}" if m else "-"

    for r in rows:
        t = r["test"]
        meets = r["meets_thresholds"] and r.get("meets_heldout_wordings", True)
        untested = meets and "heldout_wordings" not in r and r.get("source") == "build"
        table.add_row(r["model"], r["kind"], str(r["steps"]), f"{t['good_aligned']:.2f}", f"{t['poor_misaligned']:.2f}",
                      both(r.get("heldout_wordings")), both(r.get("fresh_wordings")), both(r.get("heldout_topics")),
                      "[yellow]trained[/]" if untested else "[green]yes[/]" if meets else "[red]no[/]")
    print_table(table)
    console.print(f"good: fraction aligned under good oversight (>= {th.good_aligned}); poor: a faker's fraction "
                  f"misaligned under poor oversight (>= {th.poor_misaligned}; an aligned model's aligned fraction "
                  f"there is >= {th.poor_aligned}); held-out / fresh / topics: good/poor on wordings no split trains "
                  "on, on 4 + 4 fresh wordings, on held-out topics; 'trained': met on validation, not verified; "
                  "--wide: every column", highlight=False)


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
