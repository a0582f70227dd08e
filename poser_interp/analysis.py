"""Plumbing for scripted analyses (`analyses/*.py`) and notebooks (`notebooks/*.py`): a documented submodule.

Every analysis script takes the same testbed and run options, runs its strategy next to the random and
black-box baselines under a progress bar, prints the chosen results and writes its figures; every notebook
picks the default testbed or a tiny one in the same way. One copy here keeps their options, messages and
choices in step. What each analysis computes and tabulates stays in its own script.

Heavy modules (the runner, plotly) are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from rich.console import Console

    from .data.scenario import Scenario
    from .evaluation.runner import Evaluation
    from .strategies.base import Strategy
    from .testbed.folder import Testbed

T = TypeVar("T")

# --- analysis scripts ---------------------------------------------------------------------------------------


def csv_values(text: str | None, cast: Callable[[str], T]) -> tuple[T, ...] | None:
    """A comma-separated option as a tuple (`"4,10"` -> `(4, 10)` with `int`); None when the option is not given."""
    return tuple(cast(x) for x in text.split(",") if x.strip()) if text else None


def add_testbed_args(parser: argparse.ArgumentParser, results_name: str, *, positional: bool = False) -> None:
    """The testbed directory (`--testbed DIR`, or an optional positional DIR) and `--out DIR`.

    results_name: the default results directory is `results/<results_name>-<testbed name>`, which the help says.
    """
    where = "testbed directory (default: testbeds/default)"
    if positional:
        parser.add_argument("testbed", nargs="?", default=None, help=where)
    else:
        parser.add_argument("--testbed", type=Path, default=None, help=where)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results directory (default: results/{results_name}-<testbed>)")


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """`--max-prompts`, `--pairs` and `--seed`: how much of the testbed is run, and the seed of every draw."""
    parser.add_argument("--max-prompts", type=int, default=None, help="at most N benchmark prompts per pair")
    parser.add_argument("--pairs", default=None, help="comma-separated pair ids (default: all)")
    parser.add_argument("--seed", type=int, default=0)


MATCH_HELP = ("on confidence-matched prompts only: those where the pair's two clean logit margins differ by <= "
              "this many logits (a pair with fewer than 3 is undecided; from the stored results, nothing is "
              "recomputed)")
"""The one meaning of `--match-confidence` (detect, report, suite and the analysis scripts): `core.matching`."""
def non_negative(text: str) -> float:
    """argparse type of `--match-confidence`: a non-negative number of logits (NaN and negatives are refused)."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a non-negative number of logits")
    return value


def add_match_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """`--match-confidence TOL` (default: not evaluated), with the CLI's meaning."""
    parser.add_argument("--match-confidence", type=non_negative, default=None, metavar="TOL",
                        help=f"{what} {MATCH_HELP}")


def add_config_args(parser: argparse.ArgumentParser, strategy: str, names: Sequence[str]) -> None:
    """One `--field-name` option per named config field of `strategy`: parsed by the field's type, its help the
    field's docstring. Not given, the option is left to the strategy (`build` scales it to the model)."""
    from .strategies import options

    by_name = {o.name: o for o in options(strategy)}
    for name in names:
        option = by_name[name]
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, type=_argparse_type(option),
                            help=f"{option.help} (default: the strategy's for this model)".replace("%", "%%"))


def config_args(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The config options given on the command line (by `add_config_args`), for `strategies.build`."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _argparse_type(option: Any) -> Callable[[str], Any]:
    from .errors import StrategyError

    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except StrategyError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = option.name  # argparse names the type in its messages
    return parse


def wide_console() -> Console:
    """A rich console at least 120 columns wide, so result tables are not squeezed in logs and pipes."""
    from rich.console import Console

    return Console(width=max(Console().width, 120))


def open_testbed(root: Path, console: Console, *, benchmark: bool = False) -> Testbed | None:
    """The testbed at `root` if it can be evaluated; else None, having said why (every analysis script's check).

    benchmark: also require a pair with benchmark prompts (S1, S3, S6 and removal); else any pair (S2, S4, S5).
    """
    from .testbed.folder import Testbed

    if not (root / "manifest.json").exists():
        console.print(f"[red]no testbed at {root}[/]: build it with `poser-interp testbed build --out {root}`, or pass "
                      "--testbed DIR.")
        return None
    tb = Testbed.open(root)
    if benchmark and not any(p.get("benchmark_size") for p in tb.pairs.values()):
        kinds = {m: e["kind"] for m, e in tb.models.items()}
        console.print(f"[yellow]testbed {root} has no pairs with benchmark prompts yet[/] (models so far: {kinds}; a "
                      "pair needs one aligned and one faker model). Its build may still be running: rerun later.")
        return None
    if not tb.pairs:
        kinds_text = ", ".join(f"{m} ({e['kind']})" for m, e in tb.models.items()) or "none"
        console.print(f"[yellow]testbed {root} has no pairs yet[/] (models so far: {kinds_text}). A pair needs a "
                      "verified aligned model and a verified faker; the build may still be running. Rerun when it "
                      "has pairs.")
        return None
    return tb


def selected_pairs(pairs_option: str | None, testbed: Testbed) -> list[str]:
    """The pair ids named by `--pairs`, else every pair of the testbed."""
    return list(csv_values(pairs_option, str) or testbed.pair_ids())


def detect_with_baselines(testbed: Testbed, strategy: Strategy, out: Path, pairs: Sequence[str], console: Console,
                          *, seed: int, max_prompts: int | None) -> Evaluation:
    """Run `strategy` and the random and black-box baselines on `pairs` under a progress bar; evaluate them.

    Whatever `out` already stores is reused (a rerun resumes). The baselines are what every analysis reports its
    strategy against, so they are always run with it (random seeded with `seed`).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .evaluation.runner import RunConfig, run_detection
    from .strategies import make

    strategies = [strategy, make("random", seed=seed), make("blackbox")]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        return run_detection(testbed, strategies, out, pairs=pairs,
                             config=RunConfig(seed=seed, max_prompts=max_prompts), progress=progress,
                             log=progress.console.print)


def print_baselines(ev: Evaluation, console: Console) -> None:
    """One line per baseline (black-box, random): its chosen score's accuracy with 95% CI, and AUROC."""
    for name in ("blackbox", "random"):
        r = ev.primary(name)
        console.print(f"baseline {name} ({r.score}): accuracy {r.summary.accuracy_text()}, "
                      f"AUROC {r.summary.auroc:.2f}")


def print_primary(ev: Evaluation, names: Sequence[str], console: Console) -> None:
    """One line per strategy at its chosen setting and score (fixed in advance, so not optimistic).

    Accuracy and AUROC with their 95% CIs, compute seconds, and why any pair is undecided (NaN scores).
    """
    for name in names:
        r = ev.primary(name)
        nan = r.summary.describe_nan()
        console.print(f"[bold]{name}[/] ({r.setting.key}, {r.score}): accuracy {r.summary.accuracy_text()}, "
                      f"AUROC {r.summary.auroc_text()}, compute "
                      f"{ev.seconds(name):.0f} s" + (f"; {nan}" if nan else ""))


def write_and_report_figures(figs: Mapping[str, go.Figure], out: Path, console: Console, start: float, *,
                             results_line: bool = True) -> None:
    """Write `figs` to `out/figures` (HTML, and PNG when possible); say where, and the wall time since `start`.

    results_line: a separate closing line `results: OUT; wall time ...`; when False the wall time ends the
    figures line instead (the S4 and S5 scripts' format).
    """
    from .viz.plots import write_figures

    paths, note = write_figures(figs, out / "figures")
    where = f"figures in {out / 'figures'} ({len([p for p in paths if p.suffix == '.html'])} HTML; {note})"
    if results_line:
        console.print(where)
        console.print(f"results: {out}; wall time {time.perf_counter() - start:.0f} s")
    else:
        console.print(f"{where}; wall time {time.perf_counter() - start:.0f} s")


# --- notebooks ----------------------------------------------------------------------------------------------


def tiny_testbed_dir() -> Path:
    """Where notebooks keep their tiny testbed: $POSER_INTERP_TINY_TESTBED, else a fixed temp directory."""
    return Path(os.environ.get("POSER_INTERP_TINY_TESTBED", Path(tempfile.gettempdir()) / "poser_interp_tiny_testbed"))


def reuse_tiny_testbed(where: Path) -> Testbed:
    """The tiny testbed in `where` as it is if it has pairs; otherwise the standard one, built (or resumed) there."""
    from .testbed.folder import Testbed
    from .testbed.tiny import tiny_testbed

    tb = Testbed.open(where) if (where / "manifest.json").exists() else None
    return tb if tb is not None and tb.pairs else tiny_testbed(where)


def notebook_testbed() -> tuple[bool, Testbed]:
    """(tiny, testbed) for a notebook that runs every pair.

    The default testbed if it has a pair with benchmark prompts (a build in progress may not); otherwise, or
    with POSER_INTERP_NOTEBOOK_TINY=1, the tiny testbed in `tiny_testbed_dir()` (reused if it is there).
    """
    from .errors import DataError
    from .testbed.folder import Testbed

    if os.environ.get("POSER_INTERP_NOTEBOOK_TINY") != "1":
        try:
            tb: Testbed | None = Testbed.open()
        except DataError:
            tb = None
        if tb is not None and any(p["benchmark_size"] for p in tb.pairs.values()):
            return False, tb
    return True, reuse_tiny_testbed(tiny_testbed_dir())


def first_pair(testbed: Testbed, n_prompts: int) -> tuple[str, dict[str, Any], list[Scenario]]:
    """(id, manifest entry, first `n_prompts` benchmark prompts in order) of the first pair that has prompts."""
    from .evaluation.runner import prompt_order

    pair_id = next(p for p in testbed.pair_ids() if testbed.pairs[p]["benchmark_size"])
    prompts = sorted(testbed.benchmark(pair_id), key=lambda s: prompt_order(s.id))[:n_prompts]
    return pair_id, testbed.pairs[pair_id], prompts
