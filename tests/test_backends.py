"""--backend and --remote: where each row is computed, recorded; refusals in one line; what a remote S2 trace sends.

No network: NDIF is simulated by nnsight's `remote="local"` backend, which serializes each trace as for the server
and runs it with the toolkit's modules hidden (so a hook's side effects do not reach this process, as on NDIF).
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.core.forward import forward
from poser_interp.core.hooks import add_vector, capture
from poser_interp.core.models import ModelSpec
from poser_interp.core.nnsight_model import API_KEY_ENV, load_nnsight, remote_problem
from poser_interp.core.tokens import pad_left
from poser_interp.errors import BackendError, DataError
from poser_interp.evaluation.results import ResultsStore, Row
from poser_interp.evaluation.runner import RunConfig, check_backend, row_backend, run_detection
from poser_interp.strategies import PromptValues, Setting, StrategyError, build, make
from poser_interp.strategies.noise import NoiseConfig, noise_tensor
from poser_interp.strategies.noise_engines import NNsightEngine
from poser_interp.testbed.tiny import tiny_testbed

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
HUB = ModelSpec(name="hub:HuggingFaceTB/SmolLM2-135M-Instruct")


# --- refusals, without network ---------------------------------------------------------------------------------------
def test_remote_refusals_name_the_fix(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert "hub models only" in remote_problem(ModelSpec(name="tiny-llama"), True)
    assert "hub models only" in remote_problem(ModelSpec(name="/some/local/checkpoint"), True)
    assert "hub models only" in remote_problem(ModelSpec(name=HUB.name, adapter="/a/lora"), True)
    assert API_KEY_ENV in remote_problem(HUB, True)
    assert remote_problem(ModelSpec(name="tiny-llama"), False) is None
    monkeypatch.setenv(API_KEY_ENV, "k")
    assert remote_problem(HUB, True) is None
    with pytest.raises(BackendError, match="hub models only.*drop --remote"):
        load_nnsight("tiny-llama", remote=True)
    for problem in (remote_problem(ModelSpec(name="tiny-llama"), True), remote_problem(HUB, True)):
        assert problem is None or "\n" not in problem


def test_run_config_and_cli_refuse_remote_without_nnsight():
    with pytest.raises(DataError, match="add --backend nnsight"):
        RunConfig(remote=True)
    with pytest.raises(DataError, match="tl, nnsight"):
        RunConfig(backend="vllm")  # type: ignore[arg-type]
    out = CliRunner().invoke(app, ["detect", "--remote"])
    assert out.exit_code != 0 and "add --backend nnsight" in out.output
    out = CliRunner().invoke(app, ["detect", "--backend", "vllm"])
    assert out.exit_code != 0 and "pass tl or nnsight" in out.output


@pytest.mark.parametrize("name,why", [("learning_speed", "trains a LoRA copy"),
                                      ("lens", "final norm and unembedding here")])
def test_strategies_needing_weights_here_are_refused_remote(name, why):
    config = RunConfig(backend="nnsight", remote=True)
    with pytest.raises(StrategyError, match=f"{name} cannot run with --remote: it .*{why}.*drop --remote"):
        check_backend(None, [make(name)], config, [])  # type: ignore[arg-type]  # refused before models are looked at


def test_row_backend_says_what_computed_it():
    nn, remote, tl = RunConfig(backend="nnsight"), RunConfig(backend="nnsight", remote=True), RunConfig()
    assert [row_backend(make(n), nn) for n in ("noise", "learning_speed", "random", "weight_delta")] == \
        ["nnsight", "local", "tl", "tl"]
    assert row_backend(make("noise"), remote) == "nnsight-remote"
    assert row_backend(make("noise"), tl) == row_backend(make("learning_speed"), tl) == "tl"


def test_rows_store_their_backend_and_old_rows_read_as_tl():
    values = PromptValues(Setting(), ("p",), {"x": [1.0]})
    assert "backend" not in json.loads(Row("m", "noise", values).to_json())  # stores stay as they were
    stored = json.loads(Row("m", "noise", values, backend="nnsight").to_json())
    assert stored["backend"] == "nnsight" and Row.from_json(stored).backend == "nnsight"
    del stored["backend"]
    assert Row.from_json(stored).backend == "tl"


# --- what a remote trace sends ---------------------------------------------------------------------------------------
@pytest.fixture
def payloads(monkeypatch):
    """The size of every request serialized for NDIF (here: for nnsight's local simulation of it)."""
    from nnsight.schema.request import RequestModel

    sizes: list[int] = []
    serialize = RequestModel.serialize

    def recorded(*args, **kwargs):
        blob = serialize(*args, **kwargs)
        sizes.append(len(blob))
        return blob

    monkeypatch.setattr(RequestModel, "serialize", recorded)
    return sizes


def test_s2_noise_is_drawn_on_the_server_not_uploaded(payloads):
    """The noised trace ships the draw's seeds and code, not its tensor: the request is smaller than the noise alone,
    while the same trace given the tensor ships all of it on top (the check can fail); both give the local numbers."""
    sim, here = NNsightEngine(load_nnsight("tiny-llama", remote="local")), NNsightEngine(load_nnsight("tiny-llama"))
    batch = pad_left([[1] + list(range(5, 305)), [1] + list(range(9, 69))], 2)
    cfg = NoiseConfig(layers=(1,), primary_layer=1, scales=(0.5, 1.0), primary_scale=1.0, samples=4)
    draw = functools.partial(noise_tensor, batch, ["a", "b"], 1, [0.5, 1.0], 3.0, cfg, 64)
    noise = draw()
    assert noise.numel() * 4 > 1_000_000  # ~1.2 MB of noise: 16 rows of 301 tokens
    drawn = sim.noisy(batch, 1, None, draw, 8)
    uploaded = sim.noisy(batch, 1, None, noise, 8)
    assert len(payloads) == 2
    size = noise.numel() * 4
    assert payloads[0] < size / 2  # the token ids, masks and positions of the 16 rows are most of it (d_model=64)
    assert payloads[1] - payloads[0] > 0.9 * size  # an uploaded noise tensor would show as this much more
    local = here.noisy(batch, 1, None, noise, 8)
    assert (drawn - local).abs().max() <= 1e-5 and (uploaded - local).abs().max() <= 1e-5


def test_hooks_side_effects_come_back_from_a_remote_trace(tiny_llama):
    sim = load_nnsight(tiny_llama.spec, remote="local")
    batch = pad_left([[1, 5, 6, 7, 8], [1, 9, 10]], 2)
    vec = torch.randn(64)
    got, ref = {}, {}
    hooks = [("blocks.1.hook_resid_pre", add_vector(vec)), ("blocks.2.hook_resid_post", capture(got, "post"))]
    out = forward(sim, batch, hooks)
    want = forward(tiny_llama, batch, [hooks[0], ("blocks.2.hook_resid_post", capture(ref, "post"))])
    assert (out - want).abs().max() <= 1e-4
    real = batch.attention_mask.bool()
    assert (got["post"] - ref["post"])[real].abs().max() <= 1e-4


def test_s3_runs_locally_on_nnsight_with_the_bridge_numbers(tiny_llama, tmp_path):
    """S3 trains its own local copy whatever the backend: the same rows through an nnsight model (its rows are
    labelled 'local' by the runner)."""
    from poser_interp.data.generator import GeneratorConfig, generate
    from poser_interp.data.scenario_files import save_scenarios
    from poser_interp.strategies import Subject

    out = generate(GeneratorConfig(seed=0, n_train=0, n_test=12, n_benchmark=3, n_heldout=0))
    save_scenarios(out["test"], tmp_path / "test.jsonl")
    spec = ModelSpec(name="tiny-llama", n_layers=2, seed=3)
    st = make("learning_speed", data=str(tmp_path), steps=(1,), primary_steps=1, upper_layers=1, n_train=6,
              batch_size=3, lora_lr=1e-2, full_lr=1e-3)
    from poser_interp.core.models import load_model

    a = [v.values for v in st.run(Subject("m", lambda: load_model(spec)), out["benchmark"], st.settings())]
    b = [v.values for v in st.run(Subject("m", lambda: load_nnsight(spec)), out["benchmark"], st.settings())]
    assert a and all((x[k] == y[k]).all() for x, y in zip(a, b, strict=True) for k in x)


# --- a run on nnsight ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    return tiny_testbed(tmp_path_factory.mktemp("tiny_testbed"))


def test_detect_on_nnsight_records_its_backend(testbed, tmp_path, monkeypatch):
    strategies = [build("noise", 2, 4, scales=(2.0,), primary_scale=2.0, samples=2, layers=(1,)), make("random"),
                  make("blackbox")]
    lines: list[str] = []
    run_detection(testbed, strategies, tmp_path / "nn", config=RunConfig(backend="nnsight", max_prompts=2),
                  log=lines.append)
    store = ResultsStore.open(tmp_path / "nn")
    assert store.manifest["config"]["run"]["backend"] == "nnsight"
    assert {r.strategy: r.backend for r in store.rows()} == {"noise": "nnsight", "random": "tl", "blackbox": "nnsight"}
    run_detection(testbed, strategies, tmp_path / "tl", config=RunConfig(max_prompts=2), log=lines.append)
    tl = ResultsStore.open(tmp_path / "tl")
    assert "backend" not in tl.manifest["config"]["run"]  # a TL run writes what it wrote before backends
    for row in tl.rows():
        other = store.row(row.key).values
        assert all(abs(row.values.values[k] - other.values[k]).max() <= 1e-4 for k in other.values)
    with pytest.raises(DataError, match="backend: stored 'tl', now 'nnsight'"):
        run_detection(testbed, strategies, tmp_path / "tl", config=RunConfig(backend="nnsight", max_prompts=2),
                      log=lines.append)
    monkeypatch.setenv(API_KEY_ENV, "k")
    with pytest.raises(BackendError, match="is a LoRA adapter of this testbed.*drop --remote"):
        run_detection(testbed, strategies, tmp_path / "remote",
                      config=RunConfig(backend="nnsight", remote=True, max_prompts=2), log=lines.append)


def test_suite_hands_its_backend_to_the_run(testbed, tmp_path, monkeypatch):
    import poser_interp.suite.run as suite_run
    from poser_interp.suite import SuiteConfig, run_suite

    seen = []

    def stop(*args, config, **kwargs):
        seen.append(config)
        raise KeyboardInterrupt

    monkeypatch.setattr(suite_run, "run_detection", stop)
    with pytest.raises(KeyboardInterrupt):
        run_suite(testbed, tmp_path, SuiteConfig(strategies=("noise",), backend="nnsight"), log=lambda _: None)
    assert seen[0].backend == "nnsight" and not seen[0].remote
    out = CliRunner().invoke(app, ["suite", "--backend", "vllm"])
    assert out.exit_code != 0 and "pass tl or nnsight" in out.output
