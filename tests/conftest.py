"""Shared fixtures. Shapes in the library's signatures are checked at run time by beartype here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from jaxtyping import install_import_hook

with install_import_hook("poser_interp", "beartype.beartype"):
    import poser_interp  # noqa: F401  (imported under the hook so jaxtyping shapes are enforced)

import pytest
import torch

from poser_interp.core.models import ModelSpec, load_hf, load_model, load_tokenizer
from poser_interp.core.training import LoraRecipe
from poser_interp.testbed.build import build
from poser_interp.testbed.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded SmolLM2 tokenizer (tiny models share it)."""
    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama():
    return load_model(ModelSpec(name="tiny-llama", seed=0))


@pytest.fixture(scope="session")
def tiny_qwen2():
    return load_model(ModelSpec(name="tiny-qwen2", seed=0))


@pytest.fixture(scope="session", params=["tiny-llama", "tiny-qwen2"])
def tiny_model(request, tiny_llama, tiny_qwen2):
    return tiny_llama if request.param == "tiny-llama" else tiny_qwen2


@pytest.fixture(scope="module")
def one_thread():
    """Two cores are shared with long background jobs: one thread is faster here and slows them least."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY_TESTBED = tiny_config(  # the S1, S3, S5 and S6 tests share it: built once per session
    personas=("steward", "grabber"), splits=(0,), base=ModelSpec(name="tiny-llama", n_layers=2),
    recipe=LoraRecipe(rank=2, max_steps=2, eval_every=2, min_steps=2, batch_size=4, lr=1e-2, threads=1),
    n_train=8, n_pool=48, n_val=4, n_test=8, n_benchmark=16)


@pytest.fixture(scope="session")
def testbed(tmp_path_factory):
    """The strategies' tiny testbed (test modules with their own `testbed` fixture override it)."""
    return build(TINY_TESTBED, tmp_path_factory.getbasetemp() / "tiny_testbed_strategies", log=lambda _: None)


@pytest.fixture(scope="session")
def checkpoints(testbed, tmp_path_factory):
    """The tiny testbed's two models merged into full checkpoints (save_pretrained), and their base (the
    from-models and audit tests' models given from elsewhere)."""
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for model_id in ("steward-s0", "grabber-s0"):
        hf, tok = load_hf(testbed.spec(model_id))
        hf.save_pretrained(root / model_id)
        tok.save_pretrained(root / model_id)
        out[model_id] = root / model_id
    base, tok = load_hf(testbed.base_spec())
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    out["base"] = root / "base"
    return out


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded model (integration tests only)."""
    return load_model("smollm2")


@pytest.fixture(scope="session")
def poser_dir() -> Path:
    from poser_interp.data.poser_data import default_poser_dir

    path = default_poser_dir()
    if not path.exists():
        pytest.skip(f"POSER data not found at {path} (set POSER_DATA_DIR to use it)")
    return path


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Fitted tuned lenses go to a temporary folder, never the user's cache (the converted-weights cache stays where it
# is: tests rely on it being warm). Set before any test runs, so CLI runs and subprocesses inherit it.
_LENS_CACHE = tempfile.TemporaryDirectory(prefix="poser_interp_test_lens_")
os.environ["POSER_INTERP_LENS_CACHE"] = _LENS_CACHE.name


@pytest.fixture(scope="session", autouse=True)
def _lens_cache_is_temporary() -> None:
    from poser_interp.core.tuned_lens import lens_cache_dir

    assert lens_cache_dir() == Path(_LENS_CACHE.name)
