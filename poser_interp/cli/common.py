"""What every `poser-interp` command shares: the app, the console, one-line errors and option checks.

Errors the toolkit raises on purpose (PoserInterpError) and bad option values (typer.BadParameter) print as
one red line naming the fix and exit 2; anything else is a bug and keeps its traceback. Options are checked
before anything is loaded or written. docs/bad-inputs.md lists what each bad input gets.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
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
    """One line for every error of a command: ours (PoserInterpError, BadParameter) name the fix; an OS error names
    the file; anything else is a bug: one line and the path of a log file holding its traceback (`guarded`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with guarded():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Turn an exception into one `error:` line and exit code 2; never a traceback (click's own exits pass)."""
    passes: tuple[type[BaseException], ...] = tuple({typer.Exit, typer.Abort, *_click_exceptions()})
    try:
        yield
    except typer.BadParameter as e:  # raised by our own checks: one line, not click's usage box
        _bad_parameter(e)
    except passes:  # exits and usage errors: typer prints them
        raise
    except PoserInterpError as e:
        fail(str(e))
    except OSError as e:  # a folder that cannot be made, a full disk: the file and the reason, no traceback
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        fail(f"cannot use{where}: {e.strerror or e} (check the path and its permissions)")
    except Exception as e:  # a bug: one line here, the traceback in a log file
        fail(f"unexpected {type(e).__name__}: {_one_line(str(e))} (a bug; the traceback is in {_log_traceback()})")


def _click_exceptions() -> list[type[BaseException]]:
    """Typer's (vendored or click's) exit and usage exceptions, which pass the guard."""
    out: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            mod = __import__(module, fromlist=["ClickException"])
        except ImportError:
            continue
        out += [getattr(mod, n) for n in ("ClickException", "Exit", "Abort") if hasattr(mod, n)]
    return out


def _bad_parameter(e: Any) -> None:
    hint = e.param_hint if isinstance(e.param_hint, str) else None
    fail(f"{hint}: {e.message}" if hint and not e.message.startswith(hint) else e.message)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _log_traceback() -> Path:
    """Write the current exception's traceback to a new log file ($POSER_INTERP_LOG_DIR, else the temporary
    folder's poser-interp-errors/) and return its path."""
    import sys
    import tempfile
    import time
    import traceback

    folder = Path(os.environ.get("POSER_INTERP_LOG_DIR") or Path(tempfile.gettempdir()) / "poser-interp-errors")
    path = folder / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(f"poser-interp {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    except OSError:
        path = Path(tempfile.mkstemp(prefix="poser-interp-error-", suffix=".log")[1])
        path.write_text(traceback.format_exc())
    return path


def fail(message: str) -> None:
    from rich.markup import escape

    message = message.strip()  # errors never start with a blank line
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, markup=True)
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


MAX_COUNT = 10**6
"""Largest count option accepted (prompts, samples, steps): above it a value is a typo (`--max-prompts 1e20`)."""


def at_most(high: int, **options: int | float | None) -> None:
    """Refuse a count option above `high` (None means 'not given'), naming the flag and the fix."""
    for name, value in options.items():
        if value is not None and value > high:
            flag = "--" + name.replace("_", "-")
            raise typer.BadParameter(f"{value} is more than {high:,}; pass a smaller number"
                                     + (" (0 means all)" if name in ("max_prompts", "limit") else ""),
                                     param_hint=flag)


def check_seed(seed: int, flag: str = "--seed") -> int:
    """A seed: 0 .. 2**32 - 1 (what numpy and torch generators take)."""
    if not 0 <= seed < 2**32:
        raise typer.BadParameter(f"{seed} is not a seed; pass a whole number from 0 to {2**32 - 1}", param_hint=flag)
    return seed


def csv_option(value: str | None, flag: str, leave_out: str) -> list[str] | None:
    """A comma-separated option: None when not given; refused when given but empty (`--pairs ''`), which would
    otherwise read as 'not given' and silently select everything."""
    if value is None:
        return None
    parts = split_csv(value)
    if not parts:
        raise typer.BadParameter(f"{value!r} is empty; name at least one, or leave the option out for {leave_out}",
                                 param_hint=flag)
    return parts


def choice(value: str | None, choices: tuple[str, ...], flag: str) -> None:
    if value is not None and value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, choices))}", param_hint=flag)


def out_folder(out: Path, flag: str = "--out") -> None:
    """Refuse an output folder that is an existing file, before anything is computed."""
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file; pass a folder (a new one is created)", param_hint=flag)
    if not out.exists():  # can it be made? try, and take back what was made: a refused run leaves nothing
        made = [p for p in (out, *out.parents) if not p.exists()]
        try:
            out.mkdir(parents=True)
        except OSError as e:
            raise typer.BadParameter(f"cannot create {out}: {e.strerror or e}; pass a folder you can write",
                                     param_hint=flag) from None
        finally:
            for p in made:  # deepest first
                with contextlib.suppress(OSError):
                    p.rmdir()


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


@contextlib.contextmanager
def bars(*columns: Any, **options: Any) -> Iterator[Any]:
    """A `rich.progress.Progress` on the console; when an error ends it before any bar was drawn, it leaves no blank
    line behind (so the error is the first line: errors never start with a blank line)."""
    from rich.progress import Progress

    with Progress(*columns, console=console, **options) as progress:
        try:
            yield progress
        except BaseException:
            if not progress.tasks:  # stop it here, quietly: Progress.stop prints a line when not on a terminal
                progress.live.transient = True
                progress.live.stop()
                progress.disable = True
            raise


def plural(n: int, word: str) -> str:
    """'1 pair', '2 pairs' (a word whose plural adds 's')."""
    return f"{n} {word}{'' if n == 1 else 's'}"


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
    with guarded():  # also what fails outside a command (the app's callback, an import)
        app()
