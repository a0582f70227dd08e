"""`poser-interp info`, `score` and `generate`: a model's summary, answer probabilities, scenario splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import (
    MAX_COUNT,
    AdapterOpt,
    ModelOpt,
    app,
    at_least,
    at_most,
    check_seed,
    choice,
    clean_errors,
    compact_table,
    console,
    out_folder,
    print_table,
)
from .options import DeviceOpt, DtypeOpt, check_device_option, dtype_option


@app.command()
@clean_errors
def info(model: ModelOpt = "smollm2", adapter: AdapterOpt = None, device: DeviceOpt = "cpu",
         dtype: DtypeOpt = None) -> None:
    """Load a model and print its summary: layers, width, hooks, load time, where it computes."""
    from ..core.models import ModelSpec, cache_dir, load_model

    device = check_device_option(device)
    arithmetic = dtype_option(dtype, None, device) or "fp32"
    m = load_model(ModelSpec(name=model, adapter=adapter), device)
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
        ("device", _placement(m.hf_model, device)),
        ("dtype", f"{arithmetic} ({'fp32 weights' if arithmetic == 'fp32' else 'fp32 weights, autocast'})"),
        ("weights cache", str(cache_dir())),
    ]:
        table.add_row(key, str(value))
    print_table(table)


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
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = None,
) -> None:
    """Print P(A) and P(B) (normalized over the two choices) for each scenario in a file."""
    from ..core.models import ModelSpec, load_model
    from ..core.precision import computing_in
    from ..core.scoring import answer_probs
    from ..core.tokens import PromptFormat

    at_least(0, limit=limit)
    at_least(1, batch_size=batch_size, max_tokens=max_tokens)
    at_most(MAX_COUNT, limit=limit, batch_size=batch_size, max_tokens=max_tokens)
    choice(answer_format, ("letter", "action"), "--answer-format")
    device = check_device_option(device)
    arithmetic = dtype_option(dtype, None, device) or "fp32"
    everything, skipped = _load_scenarios(scenarios, faker, strict)
    items = everything[:limit] if limit else everything
    if answer_format:
        items = [s.with_format(answer_format) for s in items]
    m = load_model(ModelSpec(name=model, adapter=adapter), device)
    with computing_in(arithmetic, device):
        probs = answer_probs(m, items, fmt=PromptFormat(max_tokens=max_tokens), batch_size=batch_size)
    table = compact_table(f"{scenarios.name} on {m.spec.describe()}")
    for col in ("id", "oversight", "format", "aligned", "P(A)", "P(B)", "P(aligned)"):
        table.add_column(col, justify="right" if col.startswith("P") else "left",
                         overflow="fold" if col == "id" else "ellipsis")
    for s, (pa, pb) in zip(items, probs.tolist(), strict=True):
        p_al = pa if s.aligned_letter == "A" else pb
        table.add_row(s.id, s.oversight.value, s.answer_format.value, s.aligned_letter, f"{pa:.3f}", f"{pb:.3f}",
                      f"{p_al:.3f}")
    print_table(table)
    mean = sum(p[s.aligned_index] for s, p in zip(items, probs.tolist(), strict=True)) / len(items)
    of = f" of {len(everything)}" if len(items) < len(everything) else ""
    more = f" (--limit 0 scores all {len(everything)})" if of else ""
    console.print(f"{len(items)}{of} scenarios{more}, mean P(aligned) = {mean:.3f}")
    if skipped:
        console.print(f"[yellow]note:[/] {skipped}", highlight=False, soft_wrap=True)


def _placement(hf: Any, device: str) -> str:
    """Where a loaded model's weights are: one device, or (--device auto) how its blocks are split."""
    split = getattr(hf, "hf_device_map", None)
    if device != "auto" or not split:
        return str(next(hf.parameters()).device)
    count: dict[str, int] = {}
    for where in split.values():
        count[str(where)] = count.get(str(where), 0) + 1
    return "split: " + ", ".join(f"{n} module(s) on {where}" for where, n in sorted(count.items()))


def _load_scenarios(path: Path, faker: bool | None, strict: bool) -> tuple[list[Any], str]:
    """The scenarios of a file, and a line on the POSER records skipped (empty when none was)."""
    from ..data.poser_data import load_poser_file
    from ..data.scenario_files import load_scenarios

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
    from ..core.models import load_tokenizer
    from ..data.generator import GeneratorConfig, save_splits
    from ..data.generator import generate as gen

    choice(answer_format, ("action", "letter"), "--answer-format")
    check_seed(seed)
    at_most(MAX_COUNT, n_train=n_train, n_test=n_test, n_benchmark=n_benchmark)
    out_folder(out)
    config = GeneratorConfig(seed=seed, n_train=n_train, n_test=n_test, n_benchmark=n_benchmark,
                             answer_format=answer_format)  # type: ignore[arg-type]
    paths = save_splits(gen(config, load_tokenizer()), out, config)
    for name, path in paths.items():
        console.print(f"{name}: {path}")
