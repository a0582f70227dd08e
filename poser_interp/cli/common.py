"""What every `poser-interp` command shares: the app, the console, one-line errors and option checks.

Errors the toolkit raises on purpose (PoserInterpError) and bad option values (typer.BadParameter) print as
one red line naming the fix and exit 2; anything else is a bug and keeps its traceback. Options are checked
before anything is loaded or written. docs/bad-inputs.md lists what each bad input gets.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ..errors import PoserInterpError

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
            fail(str(e))
        except typer.BadParameter as e:  # raised by our own checks: one line, not click's usage box
            hint = e.param_hint if isinstance(e.param_hint, str) else None
            fail(f"{hint}: {e.message}" if hint and not e.message.startswith(hint) else e.message)

    return wrapper  # type: ignore[return-value]


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(2)


@app.callback()
def _quiet() -> None:
    """Third-party noise (transformers' deprecation warnings and weight-loading bars) is ours to hide."""
    from ..core.models import quiet_third_party

    quiet_third_party()


def at_least(low: int, **options: int | None) -> None:
    """Refuse an integer option below `low` (None means 'not given'), naming the flag."""
    for name, value in options.items():
        if value is not None and value < low:
            flag = "--" + name.replace("_", "-")
            raise typer.BadParameter(f"must be >= {low}, got {value}" + (" (0 means all)" if low == 0 else ""),
                                     param_hint=flag)


def choice(value: str | None, choices: tuple[str, ...], flag: str) -> None:
    if value is not None and value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, choices))}", param_hint=flag)


def out_folder(out: Path, flag: str = "--out") -> None:
    """Refuse an output folder that is an existing file, before anything is computed."""
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file; pass a folder (a new one is created)", param_hint=flag)


def split_csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def ints(text: str, flag: str) -> list[int]:
    parts = split_csv(text) or []
    if not parts or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"{flag} must be comma-separated non-negative integers, got {text!r}")
    return [int(p) for p in parts]


def check_tolerance(match_confidence: float | None) -> None:
    """Refuse a negative (or NaN) --match-confidence before anything is computed."""
    if match_confidence is not None and not match_confidence >= 0:
        raise typer.BadParameter(f"{match_confidence} is not a non-negative number of logits",
                                 param_hint="--match-confidence")


def numbers(text: str | None, cast: Callable[[str], Any], flag: str, what: str) -> tuple[Any, ...]:
    """A comma-separated option parsed with `cast` (empty when not given), or a one-line error naming the flag."""
    out = []
    for part in split_csv(text) or []:
        try:
            out.append(cast(part))
        except ValueError:
            raise typer.BadParameter(f"{part!r} is not {what}; pass e.g. {flag} {'4,10' if cast is int else '0.5,1'}",
                                     param_hint=flag) from None
    if len(set(out)) != len(out):
        raise typer.BadParameter(f"{text!r} lists a value twice", param_hint=flag)
    return tuple(out)


def width() -> int:
    """The terminal's width; $COLUMNS when set; else (logs and pipes) 130, so cells are not squeezed."""
    if console.is_terminal:
        return console.width
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else max(console.width, 130)


def print_table(table: Table) -> None:
    (console if console.is_terminal else Console(width=width())).print(table)


def compact_table(title: str) -> Table:
    """A compact table (no vertical rules), so results stay readable at 80 columns."""
    return Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)


def main() -> None:  # pragma: no cover
    app()
