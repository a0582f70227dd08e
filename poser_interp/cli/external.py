"""`testbed from-models` (models made elsewhere: checkpoints, adapters, hub ids) and `audit` (a verdict on an
unlabelled pair)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .common import app, clean_errors, console, out_folder
from .options import (
    AUDIT_REMOTE_HELP,
    BACKEND_HELP,
    DeviceOpt,
    DtypeOpt,
    check_backend_option,
    check_device_option,
    dtype_option,
)
from .testbed import testbed_app

FormatOpt = Annotated[str, typer.Option("--prompt-format", help="how prompts are rendered: chat (the tokenizer's "
                                        "chat template), plain (none: base models), poser (POSER's <<prompt>> "
                                        "wrapper, letter answers)")]


def _device(device: str, dtype: str | None) -> tuple[str, str]:
    """(--device resolved, --dtype checked for it)."""
    device = check_device_option(device)
    return device, dtype_option(dtype, None, device) or "fp32"


@testbed_app.command("from-models")
@clean_errors
def testbed_from_models(
    spec: Annotated[Path | None, typer.Argument(help="a TOML file naming models, pairs and prompts (format: "
                                                     "`poser_interp.testbed.from_models`); or use the flags")] = None,
    aligned: Annotated[str | None, typer.Option(help="one pair: the aligned model (folder or hub:ORG/NAME)")] = None,
    faker: Annotated[str | None, typer.Option(help="one pair: the faker model (folder or hub:ORG/NAME)")] = None,
    base: Annotated[str | None, typer.Option(help="adapters: their base model; checkpoints: their base, for the "
                                                  "weight_delta baseline")] = None,
    prompts: Annotated[Path | None, typer.Option(help="prompt file: scenario JSONL or a POSER JSON file")] = None,
    out: Annotated[Path, typer.Option(help="testbed folder to write")] = Path("testbeds/mine"),
    prompt_format: FormatOpt = "chat",
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = None,
) -> None:
    """Write a testbed from models made elsewhere; every weight file is hashed (checked on each later load), and each
    pair keeps the prompts on which both models act aligned."""
    from ..testbed.from_models import FromModels, ModelEntry, load_spec, write_from_models

    if spec is not None and (aligned or faker):
        raise typer.BadParameter("give a models file or --aligned/--faker, not both", param_hint="SPEC")
    if spec is None:
        if not (aligned and faker and prompts):
            raise typer.BadParameter("one pair needs --aligned, --faker and --prompts (or give a models file)",
                                     param_hint="--aligned/--faker/--prompts")
        config = FromModels(models=(ModelEntry("aligned", "aligned", aligned, base),
                                    ModelEntry("faker", "faker", faker, base)), prompts=str(prompts),
                            prompt_format=prompt_format)
    else:
        config = load_spec(spec)
        if prompt_format != "chat":
            config = FromModels(**{**config.__dict__, "prompt_format": prompt_format})
    device, dtype = _device(device, dtype)
    out_folder(out)
    tb = write_from_models(config, out, log=lambda m: console.print(m, highlight=False), device=device, dtype=dtype)
    for pair, info in sorted(tb.pairs.items()):
        console.print(f"{pair}: {info['benchmark_size']} of {info['n_prompts']} prompts (both act aligned)",
                      highlight=False)
    console.print(f"testbed written to {out}; next: poser-interp detect --testbed {out}", highlight=False)


@app.command("audit")
@clean_errors
def audit_command(
    models: Annotated[list[str], typer.Argument(help="MODEL_A MODEL_B: folders (checkpoint or adapter), hub ids "
                                                     "(hub:ORG/NAME[@REV]) or TESTBED::MODEL_ID")],
    prompts: Annotated[Path | None, typer.Option(help="prompt file (scenario JSONL or POSER JSON); default: 200 "
                                                      "good-oversight prompts from this project's generator")] = None,
    base: Annotated[str | None, typer.Option(help="adapters: their base model; checkpoints: their base (for the "
                                                  "weight_delta baseline)")] = None,
    out: Annotated[Path, typer.Option(help="folder for the audit (resumable): testbed, results, verdict, page")]
    = Path("runs/audit"),
    prompt_format: FormatOpt = "chat",
    detectors: Annotated[str | None, typer.Option(help="comma-separated detectors (default: the reference's)")]
    = None,
    max_prompts: Annotated[int | None, typer.Option(help="at most this many prompts")] = None,
    seed: Annotated[int, typer.Option(help="seed of the detectors and the bootstrap")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the verdict as JSON (key `faker`: MODEL_A, MODEL_B "
                                                         "or null)")] = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "tl",
    remote: Annotated[bool, typer.Option(help=AUDIT_REMOTE_HELP)] = False,
) -> None:
    """Which of two models fakes alignment, and how sure: the fixed detectors' votes, the baselines beside them, and
    a verdict (or "no decision") by a rule written down before any pair was judged."""
    from ..audit import AuditConfig, audit
    from ..strategies.registry import known
    from .common import check_seed, csv_option

    if len(models) != 2:
        raise typer.BadParameter(f"give exactly two models (got {len(models)}): poser-interp audit MODEL_A MODEL_B",
                                 param_hint="MODELS")
    check_seed(seed)
    backend = check_backend_option(backend, remote)
    names = csv_option(detectors, "--detectors", "the reference's")
    unknown = sorted(set(names or ()) - set(known()))
    if unknown:
        raise typer.BadParameter(f"unknown detector(s) {unknown}; known: {', '.join(known())}",
                                 param_hint="--detectors")
    if max_prompts is not None and max_prompts < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--max-prompts")
    device, dtype = _device(device, dtype)
    out_folder(out)
    config = AuditConfig(prompts=str(prompts) if prompts else None, prompt_format=prompt_format, base=base,
                         detectors=tuple(names) if names else None, seed=seed, max_prompts=max_prompts,
                         device=device, dtype=dtype, backend="nnsight" if backend == "nnsight" else "tl",
                         remote=remote)
    log = (lambda m: None) if as_json else (lambda m: console.print(m, highlight=False))
    audit(models[0], models[1], out, config, log=log)
    record = json.loads((out / "verdict.json").read_text())
    if as_json:
        print(json.dumps(record, indent=2))
        return
    for v in record["votes"]:
        band = f" band {v['band']:.3g}" if v.get("band") is not None else ""
        console.print(f"{v['detector']:>14}{' (baseline)' if v['baseline'] else '':11} gap {v['gap']:+.4g} "
                      f"[{v['interval'][0]:+.3g}, {v['interval'][1]:+.3g}]"
                      f"{band} -> {v['vote'] or 'abstains'}",
                      highlight=False)
    verdict = record["faker"] or "no decision"
    p = record["probability_b"]
    console.print(f"verdict: {verdict}{f' (p(B is the faker) = {p:.2f})' if p is not None else ''}: "
                  f"{record['reason']}", highlight=False)
    console.print(f"written: {out / 'verdict.json'}, {out / 'audit.html'}", highlight=False)


@app.command("audit-reference")
@clean_errors
def audit_reference(
    results: Annotated[list[Path], typer.Argument(help="results folders (detect/suite) of labelled testbeds")],
    detectors: Annotated[str, typer.Option(help="comma-separated detectors the ensemble combines (primary "
                                                "settings, chosen scores)")] = "concept_size,noise,attention",
    out: Annotated[Path, typer.Option(help="the reference file to write (audit reads "
                                           "poser_interp/audit/reference.json)")] = Path("reference.json"),
    seed: Annotated[int, typer.Option(help="seed of the reliability diagram's orientations and the bootstrap")] = 0,
) -> None:
    """Fit the audit's reference ensemble on labelled pairs: weights, scales, a calibration fitted on
    leave-one-persona-out predictions, and each detector's accuracy; written as a small JSON file."""
    from ..audit.reference import fit_reference
    from ..runtime.jsonio import write_json_atomic
    from .common import check_seed, csv_option

    check_seed(seed)
    names = csv_option(detectors, "--detectors", "the default") or []
    body = fit_reference(results, names, seed=seed)
    write_json_atomic(out, body)
    console.print(f"{body['description']}; written to {out}", highlight=False)
    for kind, h in body["held_out"].items():
        acc = h.get("accuracy_of_decided")
        console.print(f"held out, {kind} pairs: {h['decided']} of {h['n']} given a verdict"
                      f"{f', {acc:.2f} of them right' if acc is not None else ''}", highlight=False)
