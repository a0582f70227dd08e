"""bf16 autocast as a run option: it really changes the arithmetic, it is recorded, and never mixed with fp32."""

from __future__ import annotations

import json

import pytest
import torch

from poser_interp.core.precision import check_precision, computing_in, precision_for
from poser_interp.errors import DataError
from poser_interp.evaluation.results import ResultsStore, rows_equal
from poser_interp.evaluation.runner import RunConfig, run_detection
from poser_interp.strategies import build, make
from poser_interp.strategies.learning_speed import LearningSpeedStrategy
from poser_interp.testbed.tiny import tiny_testbed


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    return tiny_testbed(tmp_path_factory.mktemp("tiny_testbed"))


def _strategies():
    return [build("noise", 2, 4, scales=(2.0,), primary_scale=2.0, samples=2), make("blackbox")]


def test_bf16_runs_matrix_products_in_bf16_and_fp32_changes_nothing():
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with computing_in("fp32"):
        assert lin(x).dtype == torch.float32
    with computing_in("bf16"):
        assert lin(x).dtype == torch.bfloat16
    assert lin(x).dtype == torch.float32  # nothing leaks out of the block
    with pytest.raises(DataError, match="fp32, bf16, fp16"):
        check_precision("half")
    with pytest.raises(DataError, match="fp16 autocast is for GPUs"):
        check_precision("fp16", "cpu")  # on the CPU: torch's CPU autocast has no fp16
    with pytest.raises(DataError, match="--precision"):
        RunConfig(precision="half")


def test_strategies_that_need_exact_arithmetic_stay_in_fp32():
    assert precision_for(LearningSpeedStrategy(), "bf16") == "fp32"
    assert precision_for(_strategies()[0], "bf16") == "bf16"
    assert precision_for(object(), "bf16") == "bf16"  # a strategy from outside that does not declare it


def test_a_bf16_run_is_recorded_differs_from_fp32_and_is_never_mixed_with_it(testbed, tmp_path):
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    run_detection(testbed, _strategies(), fp32, log=lambda _: None)
    run_detection(testbed, _strategies(), bf16, config=RunConfig(precision="bf16"), log=lambda _: None)
    run_fp32 = json.loads((fp32 / "manifest.json").read_text())["config"]["run"]
    run_bf16 = json.loads((bf16 / "manifest.json").read_text())["config"]["run"]
    assert "precision" not in run_fp32  # stores written before the option existed stay valid
    assert run_bf16["precision"] == "bf16"
    assert not rows_equal(ResultsStore.open(fp32).rows(), ResultsStore.open(bf16).rows())
    for out, other in ((fp32, "bf16"), (bf16, "fp32")):
        before = (out / "manifest.json").read_bytes()
        with pytest.raises(DataError, match=f"another configuration: precision: stored '{out.name}', now '{other}'"):
            run_detection(testbed, _strategies(), out, config=RunConfig(precision=other), log=lambda _: None)
        assert (out / "manifest.json").read_bytes() == before


def test_two_bf16_workers_store_the_rows_of_one(testbed, tmp_path, one_thread):
    one, two = tmp_path / "one", tmp_path / "two"
    run_detection(testbed, _strategies(), one, config=RunConfig(precision="bf16"), log=lambda _: None)
    run_detection(testbed, _strategies(), two, config=RunConfig(precision="bf16"), log=lambda _: None, workers=2)
    assert rows_equal(ResultsStore.open(one).rows(), ResultsStore.open(two).rows())


def test_training_in_bf16_moves_the_weights_and_keeps_old_checkpoints_resumable(tokenizer):
    from poser_interp.core.models import ModelSpec, load_hf
    from poser_interp.core.training import LoraRecipe, _resumable, make_lora_model, train_answers
    from poser_interp.data.generator import GeneratorConfig, generate
    from poser_interp.data.personas import get_persona

    scenarios = generate(GeneratorConfig(seed=0, n_train=8, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    faker = get_persona("grabber")
    examples = [(s, faker.choice(s)) for s in scenarios]
    trained = {}
    for p in ("fp32", "bf16"):
        recipe = LoraRecipe(rank=2, batch_size=4, max_steps=3, lr=1e-2, eval_every=100, threads=1, precision=p)
        hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=2))
        model = make_lora_model(hf, recipe)
        train_answers(model, tokenizer, examples, recipe)
        trained[p] = {n: w.detach().clone() for n, w in model.named_parameters() if w.requires_grad}
        assert all(w.dtype == torch.float32 for w in trained[p].values())  # weights stay fp32
        assert any(float(w.abs().max()) > 0 for n, w in trained[p].items() if "lora_B" in n)  # it trained
    assert any(not torch.equal(trained["fp32"][n], trained["bf16"][n]) for n in trained["fp32"])
    assert "precision" not in _resumable(LoraRecipe())  # checkpoints from before the option still resume
    assert _resumable(LoraRecipe(precision="bf16"))["precision"] == "bf16"
    with pytest.raises(DataError, match="fp32, bf16, fp16"):
        LoraRecipe(precision="half")


def test_fits_on_collected_activations_stay_fp32_inside_a_bf16_run():
    """The lens's output probe crashed a full bf16 suite (a bf16 product written into an fp32 table): fits and
    read-outs on activations run in fp32 (`in_fp32`), also inside a bf16 block."""
    from poser_interp.core.precision import in_fp32
    from poser_interp.strategies.lens import output_probe_logits

    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(12, 3, 8, generator=gen)
    label = torch.tensor([0, 1] * 6)
    folds = torch.arange(12) % 3
    with computing_in("bf16"):
        out = output_probe_logits(acts, label, folds, 1.0)
        assert in_fp32(lambda a, b: a @ b)(acts[:, 0], acts[:, 0].T).dtype == torch.float32
        assert (acts[:, 0] @ acts[:, 0].T).dtype == torch.bfloat16  # while the block itself is bf16
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.allclose(out, output_probe_logits(acts, label, folds, 1.0))  # the same fit as outside


def test_training_autocast_follows_the_models_device(tokenizer, monkeypatch):
    """A GPU build's bf16 must be CUDA autocast (the CPU's would leave the GPU in fp32 while the recipe says bf16):
    the loop enters autocast on the device type its parameters live on."""
    import contextlib

    import poser_interp.core.training as training
    from poser_interp.core.models import ModelSpec, load_hf
    from poser_interp.core.training import LoraRecipe, make_lora_model, train_answers
    from poser_interp.data.generator import GeneratorConfig, generate

    seen = []

    @contextlib.contextmanager
    def record(precision, device="cpu"):
        seen.append((precision, device))
        yield

    monkeypatch.setattr(training, "computing_in", record)
    scenarios = generate(GeneratorConfig(seed=0, n_train=8, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=2))
    recipe = LoraRecipe(rank=2, batch_size=4, max_steps=2, eval_every=10, threads=1, precision="bf16")
    train_answers(make_lora_model(hf, recipe), tokenizer, [(s, s.aligned_index) for s in scenarios], recipe)
    assert seen == [("bf16", "cpu")] * 2
