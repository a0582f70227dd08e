"""Growing a testbed's benchmark pool: new candidates repeat no prompt, every model is scored, pairs stay matched."""

from __future__ import annotations

from dataclasses import replace

import pytest
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.core.models import ModelSpec
from poser_interp.core.training import LoraRecipe
from poser_interp.data.generator import GeneratorConfig, extra_benchmark, generate
from poser_interp.data.scenario import Oversight
from poser_interp.data.scenario_files import load_scenarios
from poser_interp.errors import DataError
from poser_interp.runtime.jsonio import read_json
from poser_interp.testbed.build import build, margin_of
from poser_interp.testbed.folder import Testbed
from poser_interp.testbed.grow import grow_benchmark
from poser_interp.testbed.tiny import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
CONFIG = tiny_config(
    personas=("steward", "grabber"), splits=(0,), base=ModelSpec(name="tiny-llama", n_layers=2),
    recipe=LoraRecipe(rank=2, max_steps=2, eval_every=2, min_steps=2, batch_size=4, lr=1e-2, threads=1),
    n_train=8, n_pool=40, n_val=4, n_test=4, n_benchmark=8, bench_margin_tol=1.0)


def test_extra_candidates_are_new_good_oversight_prompts_of_the_training_topics():
    gen = GeneratorConfig(seed=3, n_train=40, n_test=8, n_benchmark=8, n_heldout=4, n_topics=6)
    splits = generate(gen)
    existing = [s for ss in splits.values() for s in ss]
    one = extra_benchmark(gen, 30, 1, existing)
    assert [s.id for s in one] == [s.id for s in extra_benchmark(gen, 30, 1, existing)]  # seeded
    two = extra_benchmark(gen, 30, 2, existing + one)
    taken = {s.render() for s in existing}
    assert len(one) > 20 and not {s.render() for s in one} & taken
    assert not {s.render() for s in two} & (taken | {s.render() for s in one})
    assert {s.oversight for s in one + two} == {Oversight.GOOD}
    assert {s.topic for s in one + two} <= {s.topic for s in splits["train"]}
    assert all(s.id.startswith("gen-3-benchmark-x1-") for s in one) and two[0].id.startswith("gen-3-benchmark-x2-")
    with pytest.raises(DataError, match="count from 1"):
        extra_benchmark(gen, 4, 0, existing)


def test_grow_scores_every_model_keeps_pairs_matched_and_resumes(tmp_path):
    tb = build(CONFIG, tmp_path / "tb", log=lambda _: None)
    before = {p: e["benchmark_size"] for p, e in tb.pairs.items()}
    result = grow_benchmark(tb, min_prompts=10_000, chunk=10, max_rounds=2, log=lambda _: None)
    assert result.rounds == 2 and not result.met and result.sizes_before == before
    assert 8 < result.candidates <= 28 and set(result.scored) == {"steward-s0", "grabber-s0"}
    ids = {s.id for f in sorted((tmp_path / "tb" / "data").glob("benchmark*.jsonl")) for s in load_scenarios(f)}
    assert len(ids) == result.candidates
    tb = Testbed.open(tmp_path / "tb")
    probs = {m: read_json(tb.adapter_dir(m) / "benchmark_probs.json", m) for m in tb.models}
    assert all(set(p) == ids for p in probs.values())
    for pid, pair in tb.pairs.items():  # the confidence match holds on the grown benchmark
        a, f = pair["aligned"], pair["faker"]
        kept = tb.benchmark(pid) if pair["benchmark_size"] else []
        want = [i for i in sorted(ids) if probs[a][i] > .5 and probs[f][i] > .5
                and abs(margin_of(probs[a][i]) - margin_of(probs[f][i])) <= 1.0]
        assert sorted(s.id for s in kept) == want and result.sizes_after[pid] == len(want) >= before[pid]
    assert tb.manifest["benchmark_pool"]["extra_rounds"] == 2
    again = grow_benchmark(tb, min_prompts=10_000, chunk=10, max_rounds=2, log=lambda _: None)  # nothing left to do
    assert again.scored == {} and again.rounds == 2 and again.sizes_after == result.sizes_after
    # a model added later is scored on every candidate, the rounds included
    grown = build(replace(CONFIG, personas=("steward", "grabber", "climber")), tmp_path / "tb", log=lambda _: None)
    assert set(read_json(grown.adapter_dir("climber-s0") / "benchmark_probs.json", "climber")) == ids
    with pytest.raises(DataError, match="min_prompts"):
        grow_benchmark(grown, min_prompts=0)


def test_grow_stops_without_a_round_when_every_pair_is_large_enough(tmp_path):
    tb = build(CONFIG, tmp_path / "tb", log=lambda _: None)
    smallest = min(e["benchmark_size"] for e in tb.pairs.values())
    assert smallest > 0  # seeded: the tiny pair keeps some of its 8 candidates
    result = grow_benchmark(tb, min_prompts=smallest, chunk=10, max_rounds=3, log=lambda _: None)
    assert result.met and result.rounds == 0 and result.candidates == 8 and result.scored == {}
    out = CliRunner().invoke(app, ["testbed", "grow-benchmark", str(tmp_path / "tb"), "--min-prompts",
                                   str(smallest + 1), "--chunk", "6", "--max-rounds", "1"], catch_exceptions=False)
    assert out.exit_code == 0 and "every pair meets the target" in out.output and "12 candidate scorings" in out.output
    assert len(load_scenarios(tmp_path / "tb" / "data" / "benchmark-x1.jsonl")) == 6
    out = CliRunner().invoke(app, ["testbed", "verify", str(tmp_path / "tb"), "--limit", "2"], catch_exceptions=False)
    text = " ".join(out.output.split())  # titles wrap at the console width
    assert "clean margins within 1 logit (14 candidates, 1 extra rounds)" in text and "mean margin" in text


def test_a_testbed_being_written_is_refused_to_a_second_writer(tmp_path):
    import os
    import subprocess
    import sys

    from poser_interp.runtime.locking import FolderInUseError

    tb = build(CONFIG, tmp_path / "tb", log=lambda _: None)
    code = ("import sys, time\nfrom poser_interp.runtime.locking import hold\nwith hold(sys.argv[1]):\n"
            "    print('ready', flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tb.root)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        manifest = (tb.root / "manifest.json").read_bytes()
        with pytest.raises(FolderInUseError, match=f"testbed folder .* process {proc.pid}.*models load"):
            grow_benchmark(tb, min_prompts=10_000, chunk=4, max_rounds=1, log=lambda _: None)
        with pytest.raises(FolderInUseError, match=str(proc.pid)):
            build(replace(CONFIG, personas=("steward", "grabber", "climber")), tb.root, log=lambda _: None)
        assert (tb.root / "manifest.json").read_bytes() == manifest
        assert not (tb.root / "data" / "benchmark-x1.jsonl").exists()
        assert not (tb.root / "models" / "climber-s0").exists()
    finally:
        proc.kill()
        proc.wait()
