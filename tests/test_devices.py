"""Devices and dtypes (issue 36 item 3): --device / --dtype on every command that loads a model, tensors made where
the model is, CPU results unchanged, autocast on the device in use, S3's memory check, the GPU split's refusals.

This machine has no GPU: what a GPU run does is checked through what can fail here (the device each piece is handed,
the autocast device type, a static scan of tensor factories, CUDA's memory query mocked); `bench/gpu_check.py` runs
detect on a GPU when one is lent.
"""

from __future__ import annotations

import ast
import contextlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.core.devices import check_device, check_fits, device_type, gather_cpu
from poser_interp.core.precision import computing_in, in_fp32, scored_with
from poser_interp.errors import DataError

ROOT = Path(__file__).resolve().parents[1] / "poser_interp"
FACTORIES = {"zeros", "ones", "empty", "full", "tensor", "arange", "randn", "rand", "randint", "randperm", "eye",
             "linspace", "as_tensor"}
SCANNED = ("core", "strategies", "removal", "testbed")
CPU_ON_PURPOSE = {
    # (file, function, factory): why the tensor is made on the CPU whatever device the model is on
    ("core/activations.py", "last_resid", "empty"): "result buffer: captures come to the CPU (`last_position`)",
    ("core/activations.py", "collect", "empty"): "result buffers: captures and answer logits come to the CPU",
    ("core/nnsight_model.py", "embed_gradient", "tensor"): "target ids, moved to the embedding's device in the trace "
                                                           "(remote: where NDIF runs it)",
    ("testbed/from_models.py", "_p_aligned_remote", "tensor"): "labels read against CPU answer logits "
                                                                 "(`answer_logits` brings them back)",
    ("core/scoring.py", "score_prepared", "empty"): "result buffer: `gather_cpu` brings the two answer logits",
    ("core/scoring.py", "p_misaligned", "tensor"): "labels read against CPU probabilities",
    ("core/tokens.py", "pad_left", "full"): "batches are made on the CPU; `forward` moves them to the model",
    ("core/tokens.py", "pad_left", "zeros"): "batches are made on the CPU; `forward` moves them to the model",
    ("core/tokens.py", "pad_left", "tensor"): "batches are made on the CPU; `forward` moves them to the model",
    ("core/training.py", "answer_loss", "tensor"): "a 0-dim scalar: torch combines it with a tensor on any device",
    ("core/tuned_lens.py", "sample_tokens", "randperm"): "positions drawn by the CPU generator (same on every device)",
    ("core/tuned_lens.py", "kl_to_final", "zeros"): "accumulator of CPU sums (the read-out's sums come back)",
    ("core/tuned_lens.py", "fit", "randperm"): "held-out choice by the CPU generator (same on every device)",
    ("core/tuned_lens.py", "fit", "zeros"): "the lens is fitted on the CPU, on collected activations",
    ("core/tuned_lens.py", "fit", "ones"): "the lens is fitted on the CPU, on collected activations",
    ("core/tuned_lens.py", "fit", "eye"): "the lens is fitted on the CPU, on collected activations",
    ("core/tuned_lens.py", "_kl_steps", "randint"): "token batches drawn by the CPU generator",
    ("strategies/attention.py", "_padded_mask", "zeros"): "masks meet CPU results (saliency, captured patterns)",
    ("strategies/attention.py", "_padded_mask", "tensor"): "masks meet CPU results (saliency, captured patterns)",
    ("strategies/baselines.py", "run", "tensor"): "labels read against CPU answer logits",
    ("strategies/learning_speed.py", "run", "tensor"): "labels; `answer_stats` moves them to the logits",
    ("strategies/learning_speed.py", "answer_stats", "empty"): "result buffers (per-batch values come to the CPU)",
    ("strategies/lens.py", "fit_logreg", "zeros"): "the output probe is fitted on the CPU on collected activations",
    ("strategies/lens.py", "output_probe_logits", "full"): "result buffer of the CPU probe fit",
    ("strategies/lens.py", "lens_values", "arange"): "indexes CPU read-outs",
    ("strategies/lens.py", "run", "tensor"): "labels, choices and folds of CPU read-outs (`Readout` moves choices)",
    ("strategies/noise.py", "noise_directions", "randn"): "the CPU generator's draws: the same noise on every device",
    ("strategies/noise.py", "noise_directions", "rand"): "the CPU generator's draws: the same noise on every device",
    ("strategies/noise.py", "noise_tensor", "zeros"): "noise is assembled on the CPU; the engine moves it",
    ("strategies/noise.py", "noise_tensor", "tensor"): "noise is assembled on the CPU; the engine moves it",
    ("strategies/noise.py", "noise_values", "tensor"): "labels and choices (`gather_cpu` moves the choices)",
    ("strategies/noise.py", "noise_values", "empty"): "result buffers (`gather_cpu` brings the logits)",
    ("strategies/steering.py", "random_directions", "randn"): "the CPU generator's draws; `add_vector` moves them",
    ("strategies/steering.py", "run", "tensor"): "labels read against CPU answer logits",
    ("removal/treat.py", "noise_hooks.hook_for.hook", "randn"): "the CPU generator's draws, moved to the activation",
    ("testbed/folder.py", "behaviour", "tensor"): "labels read against CPU probabilities",
    ("testbed/folder.py", "p_aligned_hf", "tensor"): "labels read against CPU probabilities",
    ("testbed/oversight_stage.py", "oversight_p_correct", "tensor"): "labels read against CPU probabilities",
}


def _factory_calls() -> set[tuple[str, str, str]]:
    """(file, enclosing function, factory) of every `torch.<factory>(...)` without `device=` in the scanned packages."""
    found: set[tuple[str, str, str]] = set()
    for package in SCANNED:
        for path in sorted((ROOT / package).glob("*.py")):
            rel = str(path.relative_to(ROOT))

            def visit(node: ast.AST, fn: str, rel: str = rel) -> None:
                for child in ast.iter_child_nodes(node):
                    name = fn
                    if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                        name = child.name if not fn else f"{fn}.{child.name}"
                    func = getattr(child, "func", None)
                    if isinstance(child, ast.Call) and isinstance(func, ast.Attribute) \
                            and isinstance(func.value, ast.Name) and func.value.id == "torch" \
                            and func.attr in FACTORIES and not any(k.arg == "device" for k in child.keywords):
                        found.add((rel, fn, func.attr))
                    visit(child, name)

            visit(ast.parse(path.read_text()), "")
    return found


def test_every_tensor_factory_names_its_device_or_is_cpu_on_purpose():
    """A tensor made without `device=` in the core, the strategies, removal or the testbed lands on the CPU; where it
    meets the model on a GPU the run fails (or silently runs there). Each such call is either given the device or
    listed above with the reason it belongs on the CPU; the list has no stale entries."""
    calls = _factory_calls()
    unlisted = sorted(calls - set(CPU_ON_PURPOSE))
    assert not unlisted, f"tensor factories without device= (pass the model's device, or list why not): {unlisted}"
    stale = sorted(set(CPU_ON_PURPOSE) - calls)
    assert not stale, f"allow-list entries that no longer match a call: {stale}"


# --- the one device check, and the CLI's spellings ---------------------------------------------------------------
def test_check_device_resolves_auto_and_refuses_what_is_absent(monkeypatch):
    assert check_device("cpu") == "cpu"
    with pytest.raises(DataError, match="pass cpu, cuda, cuda:N or auto"):
        check_device("tpu")
    with pytest.raises(DataError, match="pass cpu, cuda, cuda:N or auto"):
        check_device("meta")
    if torch.cuda.is_available():
        return
    assert check_device("auto") == "cpu"
    with pytest.raises(DataError, match="no CUDA GPU"):
        check_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("auto") == "auto" and check_device("auto", split=False) == "cuda"
    assert check_device("cuda:1") == "cuda:1"
    with pytest.raises(DataError, match=r"has 2 GPU\(s\)"):
        check_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("auto") == "cuda"
    assert device_type("auto") == "cuda" and device_type("cuda:1") == "cuda" and device_type("cpu") == "cpu"


def test_cli_options_share_the_one_check():
    """cli.options.check_device_option is core.devices.check_device with the CLI's one-line refusal."""
    import typer

    from poser_interp.cli.options import check_device_option, dtype_option

    assert check_device_option("cpu") == "cpu"
    with pytest.raises(typer.BadParameter, match="pass cpu, cuda"):
        check_device_option("tpu")
    assert dtype_option(None, None) == "fp32" and dtype_option(None, None, default=None) is None
    assert dtype_option("bf16", None) == "bf16" and dtype_option(None, "bf16") == "bf16"
    assert dtype_option("bf16", "bf16") == "bf16"  # the same value twice is no conflict
    with pytest.raises(typer.BadParameter, match="set the same option twice"):
        dtype_option("bf16", "fp32")


@pytest.mark.parametrize("command", [
    ["detect"], ["suite"], ["remove"], ["testbed", "build", "--dry-run"], ["testbed", "verify"],
    ["testbed", "grow-benchmark"], ["score", "x.jsonl"], ["info"],
])
def test_every_model_command_refuses_a_bad_device_and_dtype_in_one_line(command, tmp_path):
    """Checked before anything is loaded or written: each refusal is one `error:` line naming the flag."""
    runner = CliRunner()
    for extra, words in ((["--device", "tpu"], "--device"), (["--dtype", "half"], "--dtype"),
                         (["--dtype", "fp16"], "fp16 autocast is for GPUs")):
        result = runner.invoke(app, [*command, *extra], catch_exceptions=False)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (command, result.output)
        assert words in lines[0], (command, extra, result.output)
    if not torch.cuda.is_available():
        result = runner.invoke(app, [*command, "--device", "cuda"], catch_exceptions=False)
        assert result.exit_code == 2 and "no CUDA GPU" in result.output and "--device cpu" in result.output


@pytest.mark.parametrize("command", [["detect"], ["suite"], ["testbed", "build", "--dry-run"]])
def test_precision_stays_the_old_spelling_of_dtype(command):
    runner = CliRunner()
    result = runner.invoke(app, [*command, "--dtype", "bf16", "--precision", "fp32"], catch_exceptions=False)
    assert result.exit_code == 2 and "set the same option twice" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, [*command, "--precision", "half"], catch_exceptions=False)
    assert result.exit_code == 2 and "--precision" in result.output


def test_build_dry_run_records_the_dtype_as_the_recipes_precision(tmp_path):
    """`testbed build --dtype bf16` is `--precision bf16`: the recipe records the precision that trains."""
    runner = CliRunner()
    for flag in ("--dtype", "--precision"):
        result = runner.invoke(app, ["testbed", "build", "--dry-run", "--out", str(tmp_path / "new"), flag, "bf16"],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["recipe"]["precision"] == "bf16"


# --- autocast on the device in use ----------------------------------------------------------------------------------
def test_computing_in_enters_autocast_on_the_devices_type(monkeypatch):
    """bf16 on a GPU is CUDA autocast (the CPU's would leave the GPU in fp32); fp32 enters none."""
    import poser_interp.core.precision as precision

    seen = []

    @contextlib.contextmanager
    def record(device_type, dtype=None, enabled=True):
        seen.append((device_type, dtype))
        yield

    monkeypatch.setattr(precision.torch, "autocast", record)
    for device in ("cuda", "cuda:1", "auto"):
        with computing_in("bf16", device):
            pass
    with computing_in("fp16", "cuda:0"):
        pass
    with computing_in("fp32", "cuda"):
        pass
    assert seen == [("cuda", torch.bfloat16)] * 3 + [("cuda", torch.float16)]


def test_in_fp32_turns_off_the_autocast_that_is_on(monkeypatch):
    """A fit inside a GPU run's bf16 block must leave CUDA autocast too, not only the CPU's."""
    import poser_interp.core.precision as precision

    switched = []
    real = torch.autocast

    @contextlib.contextmanager
    def record(device_type, dtype=None, enabled=True):
        switched.append((device_type, enabled))
        with real("cpu", enabled=enabled) if device_type == "cpu" else contextlib.nullcontext():
            yield

    monkeypatch.setattr(precision.torch, "autocast", record)
    monkeypatch.setattr(precision.torch, "is_autocast_enabled", lambda kind="cpu": kind == "cuda")
    assert in_fp32(lambda: 1)() == 1
    assert switched == [("cuda", False)]


def test_build_trains_under_autocast_on_the_parameters_device(tokenizer, monkeypatch):
    """`testbed build --device cuda --dtype bf16` trains in bf16 on the GPU: the training loop enters torch.autocast
    with the device type of the parameters it trains (here the CPU's; a model on 'cuda' gives 'cuda', as the test
    above shows for `computing_in`) and the recipe's precision."""
    import poser_interp.core.precision as precision
    from poser_interp.core.models import ModelSpec, load_hf
    from poser_interp.core.training import LoraRecipe, make_lora_model, train_answers
    from poser_interp.data.generator import GeneratorConfig, generate

    seen = []
    real = torch.autocast

    def record(device_type, dtype=None, enabled=True):
        seen.append((device_type, dtype))
        return real(device_type, dtype=dtype, enabled=enabled)

    monkeypatch.setattr(precision.torch, "autocast", record)
    scenarios = generate(GeneratorConfig(seed=0, n_train=8, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=2), "cpu")
    recipe = LoraRecipe(rank=2, batch_size=4, max_steps=2, eval_every=10, threads=1, precision="bf16")
    model = make_lora_model(hf, recipe)
    train_answers(model, tokenizer, [(s, s.aligned_index) for s in scenarios], recipe)
    params = {p.device.type for p in model.parameters() if p.requires_grad}
    assert seen == [(params.pop(), torch.bfloat16)] * 2


# --- tensors follow the model -----------------------------------------------------------------------------------------
def test_interventions_and_gathers_follow_the_tensor_they_meet():
    """The helpers that join CPU-made tensors to the model's: checked with the meta device standing in for a GPU
    (an op mixing meta and CPU tensors raises, as CPU and CUDA do)."""
    from poser_interp.core.hooks import add_tensor, add_vector
    from poser_interp.core.tokens import pad_left

    act = torch.empty(2, 3, 4, device="meta")
    with pytest.raises(RuntimeError):
        _ = act + torch.ones(2, 3, 4)  # what the hooks would do without moving their tensor
    assert add_vector(torch.ones(4))(act).device.type == "meta"
    assert add_tensor(torch.ones(2, 3, 4))(act).device.type == "meta"
    batch = pad_left([[1, 2], [3]], 0).to("meta")
    assert {t.device.type for t in (batch.input_ids, batch.attention_mask, batch.position_ids)} == {"meta"}
    logits = torch.arange(12.0).reshape(2, 6)
    assert torch.equal(gather_cpu(logits, [(1, 2), (3, 4)]), torch.tensor([[1.0, 2.0], [9.0, 10.0]]))


def test_forward_moves_the_batch_to_the_models_device(tiny_llama, monkeypatch):
    """`forward` hands the bridge a batch on `model.device` (here: the CPU, and a stand-in device recorded)."""
    from poser_interp.core import forward as fwd
    from poser_interp.core.tokens import Batch, pad_left

    moved = []
    real_to = Batch.to

    def to(self, device):
        moved.append(torch.device(device))
        return real_to(self, device)

    monkeypatch.setattr(Batch, "to", to)
    out = fwd.last_logits(tiny_llama, pad_left([[1, 2, 3]], 0))
    assert moved == [tiny_llama.device] and tiny_llama.device == torch.device("cpu") and out.shape[0] == 1


def test_a_model_loads_on_the_device_it_is_given(monkeypatch):
    """`load_model(spec, device)` places the weights there before the bridge boots (here: cpu, and a recorded move
    for 'cuda:1'); the spec stays the same."""
    import poser_interp.core.models as models

    placed = []
    monkeypatch.setattr(models, "place", lambda m, d: placed.append(d) or m)
    hm = models.load_model("tiny-llama", "cpu", n_layers=2)
    assert placed == [] and hm.device == torch.device("cpu")
    hf, _ = models.load_hf(models.ModelSpec(name="tiny-llama", n_layers=2), "cuda:1")
    assert placed == ["cuda:1"]


def test_auto_split_refuses_with_fewer_than_two_gpus():
    from poser_interp.core.devices import place

    with pytest.raises(DataError, match="fewer than two"):
        place(torch.nn.Linear(2, 2), "auto")


def test_auto_split_refuses_a_model_the_gpus_cannot_hold(monkeypatch):
    """Where accelerate's balance would put part of the model on the CPU (the GPUs' free memory is too small), the
    split is refused naming the fix: the hooked model does not run a CPU/GPU mix."""
    import accelerate

    from poser_interp.core.devices import place

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=None: (10**6, 8 * 10**10))
    asked = {}

    def infer(model, max_memory=None, no_split_module_classes=None):
        asked.update(max_memory=max_memory, no_split=no_split_module_classes)
        return {"model.layers.0": 0, "model.layers.1": "cpu"}

    monkeypatch.setattr(accelerate, "infer_auto_device_map", infer)
    with pytest.raises(DataError, match="does not fit the GPUs' free memory"):
        place(torch.nn.Linear(2, 2), "auto")
    assert asked == {"max_memory": {0: 10**6, 1: 10**6}, "no_split": []}


# --- S3's copies ------------------------------------------------------------------------------------------------------
def test_s3_states_its_memory_and_refuses_on_a_gpu_that_cannot_hold_it(monkeypatch, caplog):
    check_fits(10**12, "cpu", "a copy")  # the CPU: nothing is checked
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * 10**9, 80 * 10**9))
    with caplog.at_level("WARNING", logger="poser_interp.core.devices"):
        check_fits(10**9, "cuda:0", "S3's copy")
    assert "S3's copy needs about 1.00 GB on cuda:0 (2.00 of 80.00 GB free)" in caplog.text
    with pytest.raises(DataError, match="needs about 3.00 GB on cuda:0, which has 2.00 of 80.00 GB free"):
        check_fits(3 * 10**9, "cuda:0", "S3's copy")


def test_s3_copy_bytes_counts_the_weights_and_the_optimizer_of_what_trains():
    from poser_interp.core.devices import model_bytes
    from poser_interp.core.models import ModelSpec, load_hf
    from poser_interp.strategies.learning_speed import copy_bytes

    hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=2))
    whole = model_bytes(hf)
    layer = model_bytes(hf.model.layers[1])
    assert copy_bytes(hf, "lora", (1,)) == whole
    assert copy_bytes(hf, "full", (1,)) == whole + 3 * layer


# --- CPU results unchanged, the device recorded only when not the CPU -------------------------------------------------
def test_an_explicit_cpu_run_stores_the_rows_of_a_default_run(testbed, tmp_path):
    """Every registered strategy through the runner with device='cpu' given, against the default run: the same rows
    bit for bit, and a manifest that does not name the device (stores from before the option stay valid)."""
    from poser_interp.evaluation.results import ResultsStore, rows_equal
    from poser_interp.evaluation.runner import RunConfig, run_detection
    from poser_interp.strategies import known
    from poser_interp.suite.run import build_strategies

    strategies = build_strategies(testbed, [n for n in known()], 0)
    stores = {}
    for name, config in (("default", RunConfig(max_prompts=3)), ("cpu", RunConfig(max_prompts=3, device="cpu"))):
        run_detection(testbed, strategies, tmp_path / name, config=config, log=lambda _: None, quick=True)
        stores[name] = ResultsStore.open(tmp_path / name)
    a, b = stores["default"], stores["cpu"]
    assert "device" not in a.manifest["config"]["run"] and a.manifest["config"] == b.manifest["config"]
    assert {r.strategy for r in a.rows()} == {s.name for s in strategies}
    assert rows_equal(a.rows(), b.rows())  # keys, prompt ids, values bit for bit, meta


def test_a_gpu_run_is_recorded_and_not_mixed_with_a_cpu_one(testbed, tmp_path):
    from poser_interp.evaluation.results import ResultsStore
    from poser_interp.evaluation.runner import RunConfig, make_plan, manifest_for, run_detection
    from poser_interp.strategies import make

    strategies = [make("random")]
    plan = make_plan(testbed, None, 2)
    gpu = manifest_for(testbed, strategies, RunConfig(max_prompts=2, device="cuda:1", precision="bf16"), plan)
    assert gpu["config"]["run"] == {"max_prompts": 2, "precision": "bf16", "device": "cuda"}
    run_detection(testbed, strategies, tmp_path, config=RunConfig(max_prompts=2), log=lambda _: None)
    with pytest.raises(DataError, match="device: stored 'cpu', now 'cuda'"):  # checked before any model loads
        run_detection(testbed, strategies, tmp_path, config=RunConfig(max_prompts=2, device="cuda"),
                      log=lambda _: None)
    assert "device" not in ResultsStore.open(tmp_path).manifest["config"]["run"]
    assert scored_with("cuda:0", "fp32") == {"device": "cuda"} and scored_with("cpu", "fp32") == {}
    with pytest.raises(DataError, match="fp16 autocast is for GPUs"):
        RunConfig(precision="fp16")
