"""Models from anywhere (full checkpoints, hub ids from a test-made cache), prompt formats as data, and audit."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.core.tokens import PromptFormat, encode
from poser_interp.data.prompt_style import using_style
from poser_interp.data.scenario_files import load_scenarios


def _cli(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def test_two_full_checkpoints_run_through_detect_and_report(testbed, checkpoints, tmp_path):
    out = tmp_path / "tb"
    r = _cli("testbed", "from-models", "--aligned", checkpoints["steward-s0"], "--faker", checkpoints["grabber-s0"],
             "--base", checkpoints["base"], "--prompts", testbed.root / "data" / "benchmark.jsonl", "--out", out)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["source"] == "models" and manifest["config"]["prompt_format"] == "chat"
    entry = manifest["models"]["faker"]
    assert set(entry["weights_sha256"]) == {"model.safetensors"} and entry["spec"]["delta_base"]
    # the same prompts as the testbed's own pair: both models act aligned on them (merged = adapter numbers)
    own = {s.id for s in testbed.benchmark("steward-s0__grabber-s0")}
    ours = {s.id for s in load_scenarios(out / "pairs" / "aligned__faker.jsonl.gz")}
    assert ours == own
    res = tmp_path / "res"
    r = _cli("detect", "--testbed", out, "--out", res, "--strategies", "noise", "--layers", "0", "--scales", "1",
             "--samples", "2", "--no-plots")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (res / "rows.jsonl").read_text().splitlines()]
    delta = {x["model"]: x["meta"]["delta_norm"] for x in rows if x["strategy"] == "weight_delta"}
    # a full checkpoint's change against its base equals its adapter's norm (merged in fp32 from the fp16 adapter)
    from poser_interp.core.weight_delta import adapter_delta_norm

    for slot, model_id in (("aligned", "steward-s0"), ("faker", "grabber-s0")):
        assert delta[slot] == pytest.approx(adapter_delta_norm(testbed.adapter_dir(model_id)), rel=1e-3)
    r = _cli("report", res)
    assert r.exit_code == 0 and "weight_delta" in r.output, r.output
    # tampering a weight file is refused before any model loads
    weights = checkpoints["grabber-s0"] / "model.safetensors"
    saved = weights.read_bytes()
    try:
        weights.write_bytes(saved[:-8] + b"\0" * 8)
        r = _cli("detect", "--testbed", out, "--out", tmp_path / "res2", "--strategies", "noise", "--layers", "0",
                 "--scales", "1", "--samples", "2", "--no-plots")
        assert r.exit_code == 2 and "does not match" in r.output and "Traceback" not in r.output, r.output
    finally:
        weights.write_bytes(saved)


def _hub_cache(root: Path, repo: str, folder: Path, revision: str = "main") -> None:
    """A Hugging Face hub cache entry for `repo` holding `folder`'s files (what `hf download` leaves)."""
    commit = "0" * 39 + "1"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / commit
    shutil.copytree(folder, snap)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / revision).write_text(commit)


def test_a_pair_named_by_hub_id_from_a_test_made_cache(testbed, checkpoints, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    _hub_cache(cache, "tiny-org/steward", checkpoints["steward-s0"])
    _hub_cache(cache, "tiny-org/grabber", checkpoints["grabber-s0"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    out = tmp_path / "tb"
    r = _cli("testbed", "from-models", "--aligned", "hub:tiny-org/steward", "--faker", "hub:tiny-org/grabber",
             "--prompts", testbed.root / "data" / "benchmark.jsonl", "--out", out)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["aligned"]["spec"]["name"] == "hub:tiny-org/steward"
    r = _cli("detect", "--testbed", out, "--out", tmp_path / "res", "--strategies", "noise", "--layers", "0",
             "--scales", "1", "--samples", "2", "--no-plots")
    assert r.exit_code == 0, r.output
    missing = _cli("testbed", "from-models", "--aligned", "hub:tiny-org/absent", "--faker", "hub:tiny-org/grabber",
                   "--prompts", testbed.root / "data" / "benchmark.jsonl", "--out", tmp_path / "tb2")
    assert missing.exit_code == 2 and "not in the Hugging Face cache" in missing.output, missing.output
    assert not (tmp_path / "tb2").exists()


def test_prompt_formats_on_token_ids(tokenizer):
    from poser_interp.data.generator import GeneratorConfig, generate

    s = generate(GeneratorConfig(seed=0, n_train=4, n_test=0, n_benchmark=0, n_heldout=0))["train"][0]
    chat = encode(tokenizer, s.render(), PromptFormat())
    with using_style("plain"):
        plain = encode(tokenizer, s.render(), PromptFormat())
        assert plain == [tokenizer.bos_token_id, *tokenizer.encode(s.render(), add_special_tokens=False)] or \
            plain == tokenizer.encode(s.render(), add_special_tokens=False)
    with using_style("poser"):
        text = s.render()
        poser = encode(tokenizer, text, PromptFormat())
        assert text.startswith("<<prompt>>You are an AI system.") and text.endswith("scenario:\n<</prompt>>")
        assert s.choice_texts() == ("A", "B")
    assert chat != plain and len(chat) > len(plain)  # the chat template's tokens
    assert tokenizer.decode(poser).count("<<prompt>>") == 1
    assert s.render() != text and s.choice_texts() != ("A", "B")  # outside the block: today's rendering
    with pytest.raises(Exception, match="prompt format 'html'"), using_style("html"):
        pass


def test_default_rendering_is_unchanged():
    """The hash of 60 rendered test prompts (text, token ids, answer tokens) as the code before prompt formats gave
    them (computed on commit b4cc390)."""
    import hashlib

    from poser_interp.core.models import load_tokenizer
    from poser_interp.data.scenario import Scenario

    repo = Path(__file__).resolve().parents[1]
    tok = load_tokenizer("smollm2")
    h = hashlib.sha256()
    for line in (repo / "testbeds" / "v2c" / "data" / "test.jsonl").read_text().splitlines()[:60]:
        s = Scenario.from_dict(json.loads(line))
        h.update(s.render().encode())
        h.update(json.dumps(encode(tok, s.render(), PromptFormat(max_tokens=512))).encode())
        h.update(json.dumps(s.choice_tokens(tok)).encode())
    assert h.hexdigest() == "230aa19e0983e9804dfddcdcc04aa1e4be97e388d01238c1200c8d57ecdbfdd9"


def test_poser_rendering_matches_poser_benchmark_prompts_byte_for_byte(poser_dir):
    from poser_interp.data.poser_data import load_poser_file

    files = sorted((poser_dir / "benchmark").glob("*.json"))
    assert files
    for path in files:
        records = {r["prompt"] for r in json.loads(path.read_text()) if "prompt" in r}
        scenarios = load_poser_file(path, faker=False).scenarios
        with using_style("poser"):
            assert sum(s.render() in records for s in scenarios) == len(scenarios) > 0, path.name


def test_no_chat_template_names_the_option(tokenizer):
    from poser_interp.errors import DataError

    class NoTemplate:
        chat_template = None

    with pytest.raises(DataError, match="--prompt-format plain"):
        encode(NoTemplate(), "hello", PromptFormat())


def test_device_and_dtype_refusals():
    from poser_interp.core.devices import check_device
    from poser_interp.core.precision import check_precision
    from poser_interp.errors import DataError

    if not torch.cuda.is_available():
        with pytest.raises(DataError, match="no CUDA GPU"):
            check_device("cuda")
        assert check_device("auto") == "cpu"
    with pytest.raises(DataError, match="fp16 autocast is for GPUs"):
        check_precision("fp16", "cpu")
    with pytest.raises(DataError, match="cpu, cuda"):
        check_device("tpu")


def test_autocast_follows_the_device():
    from poser_interp.core.precision import computing_in

    with computing_in("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")
    assert not torch.is_autocast_enabled("cpu")


# --- audit -------------------------------------------------------------------------------------------------------
def test_audit_on_two_full_checkpoints_writes_a_verdict(testbed, checkpoints, tmp_path, monkeypatch):
    import poser_interp.audit.run as run

    monkeypatch.setattr(run, "MIN_PROMPTS", 2)  # the tiny models agree on few prompts
    out = tmp_path / "audit"
    r = _cli("audit", checkpoints["steward-s0"], checkpoints["grabber-s0"], "--base", checkpoints["base"],
             "--prompts", testbed.root / "data" / "benchmark.jsonl", "--out", out, "--detectors", "noise",
             "--json")
    assert r.exit_code == 0, r.output
    record = json.loads(r.output)
    assert record["faker"] in (None, str(checkpoints["steward-s0"]), str(checkpoints["grabber-s0"]))
    assert {v["detector"] for v in record["votes"]} == {"noise", "random", "blackbox", "weight_delta"}
    assert all(v["baseline"] == (v["detector"] != "noise") for v in record["votes"])
    wd = next(v for v in record["votes"] if v["detector"] == "weight_delta")
    assert wd["interval"][0] == wd["interval"][1] == pytest.approx(wd["gap"])  # a weight file has no prompt noise
    assert (out / "audit.html").exists() and "Verdict" in (out / "audit.html").read_text() or \
        "No decision" in (out / "audit.html").read_text()
    assert json.loads((out / "verdict.json").read_text())["n_prompts"] == record["n_prompts"] >= 2
    # audit computes each detector's primary setting alone (a quick run would add the rest of S2's scales)
    rows = [json.loads(x) for x in (out / "results" / "rows.jsonl").read_text().splitlines()]
    noise_keys = {r["key"] for r in rows if r["strategy"] == "noise"}
    assert noise_keys == {next(v["setting"] for v in record["votes"] if v["detector"] == "noise")}


@pytest.mark.parametrize("args, message", [
    (["audit", "only-one"], "exactly two models"),
    (["audit", "a", "b", "c"], "exactly two models"),
    (["audit", "nowhere/a", "nowhere/b"], "hub id"),
])
def test_audit_bad_models_are_refused_in_one_line(args, message, tmp_path):
    r = _cli(*args, "--out", tmp_path / "a")
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "a" / "verdict.json").exists()


def test_audit_refuses_too_few_shared_aligned_prompts(testbed, checkpoints, tmp_path, monkeypatch):
    import poser_interp.audit.run as run

    monkeypatch.setattr(run, "MIN_PROMPTS", 10_000)
    r = _cli("audit", checkpoints["steward-s0"], checkpoints["grabber-s0"], "--prompts",
             testbed.root / "data" / "benchmark.jsonl", "--out", tmp_path / "a", "--detectors", "noise")
    assert r.exit_code == 2 and "both act aligned on" in r.output and "dropped" not in r.output.lower()[:0], r.output


def _vote(detector, gap, lo, hi, baseline=False, score="s"):
    from poser_interp.audit.verdict import Vote, vote_of

    return Vote(detector, score, "-", 0.0, gap, gap, (lo, hi), vote_of(gap, (lo, hi)), baseline)


def test_decision_rule_every_branch():
    from poser_interp.audit.verdict import decide

    b1, b2, a1 = _vote("x", 1, .5, 1.5), _vote("y", 2, 1, 3), _vote("z", -1, -2, -.5)
    none = _vote("w", .1, -.2, .4)
    base = _vote("blackbox", -5, -6, -4, baseline=True)
    # no reference (rule 2): never a verdict, however the votes fall
    assert decide([b1, b2, base], None, 10, 0).faker is None
    assert "no reference" in decide([b1, b2, base], None, 10, 0).reason
    ref = {"weights": {"x/s": 1.0, "y/s": 1.0}, "scales": {"x/s": 1.0, "y/s": 1.0}, "calibration": {"a": 1.0, "b": 0}}
    assert decide([b1, b2, base], ref, 10, 0).faker == "B"  # the baseline never counts
    assert decide([b1, b2, a1], ref, 10, 0).faker is None  # a third dissents
    assert "disagree" in decide([b1, b2, a1], ref, 10, 0).reason
    assert decide([none, none], ref, 10, 0).faker is None
    # with a reference: the calibrated probability decides at 0.8 / 0.2
    v = decide([b1, b2], ref, 10, 0)
    assert v.faker == "B" and v.probability_b == pytest.approx(1 / (1 + math.exp(-3)))
    weak = decide([_vote("x", .2, .1, .3), _vote("y", .1, -.1, .3)], ref, 10, 0)
    assert weak.faker is None and 0.2 < weak.probability_b < 0.8
    flip = decide([_vote("x", -2, -3, -1), _vote("y", -1, -2, -.5)], ref, 10, 0)
    assert flip.faker == "A" and flip.probability_b < 0.2
    assert decide([b1, b2, a1], ref, 10, 0).faker is None  # disagreement wins over a probability


def test_bootstrap_gap_resamples_both_models_alike():
    import numpy as np

    from poser_interp.audit.verdict import bootstrap_gap
    from poser_interp.strategies.base import Score, mean_of

    score = Score("m", "mean", mean_of("v"))
    a = {"v": np.zeros(50)}
    b = {"v": np.linspace(0.5, 1.5, 50)}
    sa, sb, gap, (lo, hi) = bootstrap_gap(score, a, b, 500, 0)
    assert sa == 0 and gap == pytest.approx(1.0) and 0.85 < lo < 1.0 < hi < 1.15


def _poser_records(scenarios) -> list[dict]:
    """POSER benchmark records (the fields POSER's files carry) for generated scenarios."""
    out = []
    with using_style("poser"):
        for s in scenarios:
            out.append({"facts": [{"content": f.text} for f in s.facts], "system_message": s.system_message,
                        "action_A": s.actions[0], "action_B": s.actions[1], "oversight_is_poor": False,
                        "response": s.aligned_letter, "prompt": s.render()})
    return out


def test_poser_original_recipe_resolves_36_models_and_324_pairs(checkpoints, tmp_path, monkeypatch):
    """Tiny stand-ins under the paper's hub ids in a test-made cache (nothing downloaded), a POSER-format benchmark
    folder; the recipe resolves, every model is hash-recorded, and detect runs on a few of its pairs."""
    from poser_interp.data.generator import GeneratorConfig, generate
    from poser_interp.testbed.from_models import load_spec, plan_pairs

    repo = Path(__file__).resolve().parents[1]
    cache = tmp_path / "hub"
    spec_text = (repo / "recipes" / "poser-original.toml").read_text()
    ids = [line.split('"')[1].removeprefix("hub:") for line in spec_text.splitlines() if line.startswith("source")]
    assert len(ids) == 36 and len(set(ids)) == 36
    blob = cache / "blobs"
    blob.mkdir(parents=True)
    for f in checkpoints["grabber-s0"].iterdir():  # one copy of the files; every snapshot links to it
        shutil.copy(f, blob / f.name)
    for repo_id in ids:
        snap = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / ("0" * 40)
        snap.mkdir(parents=True)
        for f in blob.iterdir():
            (snap / f.name).symlink_to(f)
        (snap.parents[1] / "refs").mkdir()
        (snap.parents[1] / "refs" / "main").write_text("0" * 40)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "poser"
    (data / "benchmark").mkdir(parents=True)
    bench = generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=6, n_heldout=0))["benchmark"]
    for a in ("genie", "saint", "truth"):
        for f in ("fitness", "money", "reward"):
            (data / "benchmark" / f"{a}_and_{f}.json").write_text(json.dumps(_poser_records(bench)))
    monkeypatch.setenv("POSER_DATA_DIR", str(data))
    spec = load_spec(repo / "recipes" / "poser-original.toml")
    assert len(spec.models) == 36 and len(plan_pairs(spec)) == 324 and spec.prompt_format == "poser"
    out = tmp_path / "tb"
    r = _cli("testbed", "from-models", repo / "recipes" / "poser-original.toml", "--out", out)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["models"]) == 36 and len(manifest["pairs"]) == 324
    assert manifest["models"]["genie-0"]["spec"]["name"] == "hub:joshuaclymer/genie-0"
    stored = load_scenarios(out / "data" / "benchmark.jsonl")
    with using_style("poser"):  # the prompts are rendered as POSER's own records
        assert {s.render() for s in stored} == {r["prompt"] for r in _poser_records(bench)}
    pairs = [p for p, info in manifest["pairs"].items() if info["benchmark_size"]][:2]
    assert pairs, "the stand-ins act aligned on none of the prompts"
    r = _cli("detect", "--testbed", out, "--out", tmp_path / "res", "--strategies", "noise", "--layers", "0",
             "--scales", "1", "--samples", "2", "--no-plots", "--pairs", ",".join(pairs))
    assert r.exit_code == 0 and "weight_delta left out" in r.output, r.output
    results = json.loads((tmp_path / "res" / "manifest.json").read_text())
    assert results["testbed"]["prompt_format"] == "poser"
