"""The `poser-interp` command line: model info, answer scoring, scenario generation.

Errors the toolkit raises on purpose (PoserInterpError) print as one red line and exit 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .errors import PoserInterpError

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
            console.print(f"[bold red]error:[/] {e}", highlight=False)
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
    console.print(table)


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
    console.print(table)
    mean = sum(p[s.aligned_index] for s, p in zip(items, probs.tolist(), strict=True)) / len(items)
    console.print(f"{len(items)} scenarios, mean P(aligned) = {mean:.3f}")


def main() -> None:  # pragma: no cover
    app()
