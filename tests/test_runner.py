"""The runner on a tiny testbed: once per model, resume after a kill, refused bad input, NaN, CLI, plots, notebook."""

from __future__ import annotations

import json
import math
import os
import runpy
import shutil
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.core.matching import ConfidenceMatch
from poser_interp.data.scenario_files import load_scenarios, save_scenarios, stored
from poser_interp.errors import DataError
from poser_interp.evaluation.results import ROWS, ResultsStore, ResumeWarning, rows_equal
from poser_interp.evaluation.runner import RunConfig, evaluate, run_detection
from poser_interp.strategies import PromptValues, Setting, StrategyError, build, make
from poser_interp.strategies import registry as strategy_base
from poser_interp.strategies.base import Score, mean_of
from poser_interp.testbed.folder import Testbed
from poser_interp.testbed.tiny import tiny_testbed
from poser_interp.viz.plots import dose_response_figure, layer_figure, summary_figure, write_figures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = dict(scales=(0.5, 2.0), primary_scale=2.0, samples=2)  # = detect --layers 0,1 --scales 0.5,2 --samples 2
N_ROWS = 3 * (4 + 1 + 1)  # models x (noise: 2 layers x 2 scales, random, blackbox)


def strategies(seed: int = 0, **noise):
    return [build("noise", 2, 4, seed=seed, **{**NOISE, **noise}), make("random", seed=seed), make("blackbox")]


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    return tiny_testbed(tmp_path_factory.mktemp("tiny_testbed"))


@pytest.fixture(scope="module")
def full(testbed, tmp_path_factory):
    """An uninterrupted run, counting model loads."""
    out = tmp_path_factory.mktemp("full")
    loads: list[str] = []
    ev = run_detection(testbed, strategies(), out, log=lambda _: None,
                       load=lambda m: (loads.append(m), testbed.load(m))[1])
    return out, ev, loads


def test_each_model_computed_once_and_reused_across_pairs(testbed, full):
    out, ev, loads = full
    assert sorted(loads) == ["climber-s0", "grabber-s0", "steward-s0"]  # steward is in both pairs, loaded once
    store = ResultsStore.open(out)
    assert len(store) == N_ROWS
    pairs = store.manifest["pairs"]
    assert set(pairs) == {"steward-s0__climber-s0", "steward-s0__grabber-s0"}
    union = set(pairs["steward-s0__climber-s0"]["prompt_ids"]) | set(pairs["steward-s0__grabber-s0"]["prompt_ids"])
    steward = store.get("steward-s0", "noise", Setting.of(layer=0, scale=2.0))
    assert set(steward.values.prompt_ids) == union  # one row serves both pairs...
    r = ev.find("noise", "flip_rate", Setting.of(layer=0, scale=2.0))[0]
    for pid, (a, f) in r.pair_scores.items():  # ...and each pair is scored on its own prompts only
        ids = pairs[pid]["prompt_ids"]
        assert a == pytest.approx(np.mean(steward.values.subset(ids)["flips"]))
        faker = store.get(pairs[pid]["faker"], "noise", Setting.of(layer=0, scale=2.0))
        assert f == pytest.approx(np.mean(faker.values.subset(ids)["flips"]))
    assert ev.primary("noise").setting == Setting.of(layer=0, scale=2.0)
    assert {x.strategy for x in ev.results} == {"noise", "random", "blackbox"}
    m = store.manifest
    assert m["config"]["seed"] == 0 and m["versions"]["torch"] and set(m["testbed"]["models"]) == set(loads)
    assert all(len(e["adapter_sha256"]) == 64 for e in m["testbed"]["models"].values())


def test_resume_after_kill_equals_uninterrupted_run(testbed, full, tmp_path, monkeypatch):
    out_full = full[0]
    real_append, appended = ResultsStore.append, []

    def dying_append(self, row):
        if len(appended) == 7:
            raise KeyboardInterrupt  # killed after 7 rows
        appended.append(row.key)
        real_append(self, row)

    monkeypatch.setattr(ResultsStore, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        run_detection(testbed, strategies(), tmp_path, log=lambda _: None)
    monkeypatch.setattr(ResultsStore, "append", real_append)
    rows = tmp_path / ROWS
    assert len(rows.read_text().splitlines()) == 7
    next_line = (out_full / ROWS).read_text().splitlines()[7]
    with rows.open("a") as f:
        f.write(next_line[: len(next_line) // 2])  # ... and the kill hit in the middle of writing row 8
    before = rows.read_bytes()
    with pytest.warns(ResumeWarning, match="incomplete.*ignored"):
        assert len(ResultsStore.open(tmp_path)) == 7  # a reader (e.g. plots during a run) changes nothing on disk
    assert rows.read_bytes() == before

    recomputed: list = []
    monkeypatch.setattr(ResultsStore, "append", lambda self, row: (recomputed.append(row.key),
                                                                   real_append(self, row))[1])
    with pytest.warns(ResumeWarning, match="cut off"):
        run_detection(testbed, strategies(), tmp_path, log=lambda _: None)
    assert len(recomputed) == N_ROWS - 7 and not set(recomputed) & set(appended)  # finished rows not redone
    lines = rows.read_text().splitlines()
    assert len(lines) == N_ROWS == len({tuple(json.loads(x)[k] for k in ("model", "strategy", "key")) for x in lines})
    assert rows_equal(ResultsStore.open(tmp_path).rows(), ResultsStore.open(out_full).rows())  # same seed, same bits


def _copy_testbed(testbed, to, drop_model=None, keep_prompts=None):
    """A copy of a testbed without one model (and its pairs), with the steward-grabber pair's benchmark cut."""
    shutil.copytree(testbed.root, to)
    manifest = json.loads((to / "manifest.json").read_text())
    if drop_model:
        del manifest["models"][drop_model]
        manifest["pairs"] = {p: e for p, e in manifest["pairs"].items() if drop_model not in e.values()}
    if keep_prompts is not None:
        bench = stored(to / "pairs" / "steward-s0__grabber-s0.jsonl")
        kept = load_scenarios(bench)[:keep_prompts]
        save_scenarios(kept, bench)
        manifest["pairs"]["steward-s0__grabber-s0"]["benchmark_size"] = len(kept)
    (to / "manifest.json").write_text(json.dumps(manifest))
    return Testbed.open(to)


def test_a_grown_testbed_resumes_in_the_same_directory(testbed, tmp_path, monkeypatch):
    """Growing a testbed grows a model's prompt union: its stale rows are recomputed, the rest reused."""
    big = _copy_testbed(testbed, tmp_path / "big", keep_prompts=8)  # so that climber's pair adds prompts
    small = _copy_testbed(big, tmp_path / "small", drop_model="climber-s0")
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    run_detection(small, strategies(), out, log=lambda _: None)
    run_detection(big, strategies(), fresh, log=lambda _: None)
    setting = Setting.of(layer=0, scale=2.0)
    old = set(ResultsStore.open(out).get("steward-s0", "noise", setting).values.prompt_ids)
    assert old < set(ResultsStore.open(fresh).get("steward-s0", "noise", setting).values.prompt_ids)

    real_append, appended, messages = ResultsStore.append, [], []
    monkeypatch.setattr(ResultsStore, "append", lambda self, row: (appended.append(row), real_append(self, row))[1])
    run_detection(big, strategies(), out, log=messages.append)
    assert {r.model for r in appended} == {"climber-s0", "steward-s0"}  # grabber's prompts did not change
    assert all(r.supersedes == (r.model == "steward-s0") for r in appended)
    assert any(m.startswith(f"steward-s0: {N_ROWS // 3} stored rows lack some of its") for m in messages)
    lines = (out / ROWS).read_text().splitlines()
    assert len(lines) == N_ROWS + N_ROWS // 3  # the superseded lines stay in the file: nothing is overwritten
    assert rows_equal(ResultsStore.open(out).rows(), ResultsStore.open(fresh).rows())  # = a fresh run, bit for bit
    ev = evaluate(ResultsStore.open(out))
    assert ev.find("noise", "flip_rate", setting)[0].summary.n_decided == 2


def test_corrupt_results_are_refused_and_left_alone(testbed, full, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full[0], out)
    lines = (out / ROWS).read_text().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + "\n"  # a torn line in the middle: not from a kill
    (out / ROWS).write_text("".join(lines))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(DataError, match="line 3 is corrupt.*Nothing was changed"):
        run_detection(testbed, strategies(), out, log=lambda _: None)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    dup = tmp_path / "dup"
    shutil.copytree(full[0], dup)
    with (dup / ROWS).open("a") as f:
        f.write(lines[0])
    with pytest.raises(DataError, match="repeats the row"):
        ResultsStore.open(dup)


def test_another_config_is_refused(testbed, full, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full[0], out)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(DataError, match=r"another configuration.*samples stored 2, now 3.*-o noise\.samples=2"):
        run_detection(testbed, strategies(samples=3), out, log=lambda _: None)
    with pytest.raises(DataError, match="seed: stored 0, now 1"):
        run_detection(testbed, strategies(), out, config=RunConfig(seed=1), log=lambda _: None)
    assert (out / "manifest.json").read_bytes() == before


def test_unknown_pair_and_strategy(testbed, tmp_path):
    with pytest.raises(DataError, match="unknown pair"):
        run_detection(testbed, strategies(), tmp_path, pairs=["nobody__nothing"], log=lambda _: None)
    with pytest.raises(StrategyError, match="unknown strategy"):
        make("telepathy")
    result = CliRunner().invoke(app, ["detect", "--strategies", "telepathy", "--testbed", str(testbed.root)])
    assert result.exit_code == 2 and "unknown strategy 'telepathy'" in result.output
    result = CliRunner().invoke(app, ["detect", "--testbed", str(testbed.root), "--pairs", "a__b",
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown pair" in result.output


@pytest.fixture
def nan_strategy():
    """A strategy whose score is NaN for one model (as a broken hook or an empty prompt set would give)."""

    class NaNStrategy:
        name: ClassVar[str] = "nan_test"
        needs_model: ClassVar[bool] = False

        def __init__(self, config):
            self.config = config

        def settings(self):
            return (Setting(),)

        def primary(self):
            return Setting()

        def preflight(self, prompts, testbed_root):
            pass

        def scores(self):
            return (Score("v", "test value", mean_of("v")),)

        def run(self, subject, prompts, settings) -> Iterator[PromptValues]:
            v = [math.nan if subject.id == "climber-s0" else (2.0 if "grabber" in subject.id else 1.0)] * len(prompts)
            yield PromptValues(Setting(), tuple(p.id for p in prompts), {"v": np.array(v)})

    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Cfg:
        pass

    strategy_base.register(Cfg)(NaNStrategy)
    yield NaNStrategy(Cfg())
    strategy_base._REGISTRY.pop("nan_test")


def test_nan_scores_are_reported_not_averaged(testbed, tmp_path, nan_strategy):
    ev = run_detection(testbed, [nan_strategy], tmp_path, log=lambda _: None)
    s = ev.primary("nan_test").summary
    assert s.undecided_pairs == ("steward-s0__climber-s0",) and s.n_decided == 1 and s.accuracy == 1.0
    assert s.nan_models == ("climber-s0",) and s.auroc == 1.0
    assert "1 of 2 pairs undecided" in s.describe_nan()
    stored = ResultsStore.open(tmp_path).get("climber-s0", "nan_test", Setting())
    assert np.isnan(stored.values.values["v"]).all()  # NaN survives the JSON round trip (stored as null)


def test_cli_detect_resumes_and_prints_the_table(testbed, full, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full[0], out)
    result = CliRunner().invoke(app, ["detect", "--strategies", "noise", "--testbed", str(testbed.root), "--out",
                                      str(out), "--layers", "0,1", "--scales", "0.5,2", "--samples", "2",
                                      "--max-prompts", "0", "--match-confidence", "0.5"])
    assert result.exit_code == 0, result.output
    for text in ("accuracy (95% CI)", "AUROC (95% CI)", "rel_margin_drop *", "raw_rise", "blackbox", "random",
                 "noise (rel_margin_drop): accuracy", "figures:", "confidence-matched prompts only"):
        assert text in result.output
    assert (out / "figures" / "summary.html").exists() and (out / "figures" / "noise_dose_response.html").exists()
    # everything stored was reused; the CLI runs every registered baseline, so weight_delta adds one row per model
    assert len((out / ROWS).read_text().splitlines()) == N_ROWS + 3
    assert "weight_delta" in result.output
    assert json.loads((out / "manifest.json").read_text())["matching"] == {"tol": 0.5, "min_prompts": 3}
    none = CliRunner().invoke(app, ["detect", "--strategies", "noise", "--testbed", str(testbed.root), "--out",
                                    str(out), "--layers", "0,1", "--scales", "0.5,2", "--samples", "2",
                                    "--max-prompts", "0", "--match-confidence", "0", "--no-plots"])
    assert none.exit_code == 0 and "no pair has 3 prompts" in none.output  # said once, not a table of NaN
    assert "confidence-matched prompts only" not in none.output
    assert json.loads((out / "manifest.json").read_text())["matching"] == {"tol": 0.0, "min_prompts": 3}  # the last
    bad = CliRunner().invoke(app, ["detect", "--testbed", str(testbed.root), "--out", str(tmp_path / "bad"),
                                   "--match-confidence", "-1"])
    assert bad.exit_code == 2 and "non-negative" in bad.output
    assert not (tmp_path / "bad").exists()  # refused before anything was computed


def test_cli_report_prints_every_stored_setting_and_writes_csv(full, tmp_path):
    import csv

    ev = evaluate(ResultsStore.open(full[0]))
    before = (full[0] / ROWS).read_text()
    result = CliRunner().invoke(app, ["report", str(full[0]), "--csv", str(tmp_path / "t.csv")])
    assert result.exit_code == 0, result.output
    for key in ("L0 x0.5", "L0 x2.0", "L1 x0.5", "L1 x2.0", "rel_margin_drop *", "neg_margin", "coin"):
        assert key in result.output
    with (tmp_path / "t.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(ev.results) and sum(r["primary"] == "True" for r in rows) == 3  # noise, random, blackbox
    for r, want in zip(rows, ev.results, strict=True):
        assert (r["strategy"], r["setting"], r["score"]) == (want.strategy, want.setting.key, want.score)
        assert float(r["accuracy"]) == pytest.approx(want.summary.accuracy, nan_ok=True)
        assert float(r["auroc_hi"]) == pytest.approx(want.summary.auroc_ci[1], nan_ok=True)
    assert (full[0] / ROWS).read_text() == before  # read-only
    only = CliRunner().invoke(app, ["report", str(full[0]), "--strategies", "blackbox", "--match-confidence", "1e9"])
    assert only.exit_code == 0 and "neg_margin" in only.output and "rel_margin_drop" not in only.output
    assert "confidence-matched" in only.output
    assert {(r["match_tol"], r["match_min_prompts"]) for r in rows} == {("", "")}  # unmatched: empty columns
    matched = CliRunner().invoke(app, ["report", str(full[0]), "--match-confidence", "1e9", "--csv",
                                       str(tmp_path / "m.csv")])
    with (tmp_path / "m.csv").open() as f:
        assert matched.exit_code == 0 and {(r["match_tol"], r["match_min_prompts"]) for r in csv.DictReader(f)} \
            == {("1000000000.0", "3")}
    none = CliRunner().invoke(app, ["report", str(full[0]), "--match-confidence", "0"])
    assert none.exit_code == 1 and "no pair has 3 prompts" in none.output
    for args, message in ((["report", str(tmp_path / "none")], "no results"),
                          (["report", str(full[0]), "--strategies", "telepathy"], "telepathy"),
                          (["report", str(full[0]), "--pairs", "a__b"], "a__b"),
                          (["report", str(full[0]), "--match-confidence", "-1"], "non-negative")):
        bad = CliRunner().invoke(app, args)
        assert bad.exit_code == 2 and message in bad.output, bad.output


def test_confidence_matched_evaluation(full):
    store = ResultsStore.open(full[0])
    plain = evaluate(store)
    everything = evaluate(store, match=ConfidenceMatch(tol=1e9))  # every prompt matched: the same numbers
    for r, m in zip(plain.results, everything.results, strict=True):
        for pid, scores in r.pair_scores.items():
            assert m.pair_scores[pid] == pytest.approx(scores, nan_ok=True)
        assert m.model_scores == pytest.approx(r.model_scores, nan_ok=True)
    nothing = evaluate(store, match=ConfidenceMatch(tol=0.0))  # no two clean margins are equal: all undecided
    assert all(r.summary.n_decided == 0 for r in nothing.results)
    pair = store.manifest["pairs"]["steward-s0__climber-s0"]
    margins = {m: store.get(pair[k], "blackbox", Setting()).values.subset(pair["prompt_ids"])["margin"]
               for k, m in (("aligned", "a"), ("faker", "f"))}
    tol = float(np.median(np.abs(margins["a"] - margins["f"])))
    keep = np.abs(margins["a"] - margins["f"]) <= tol
    assert 3 <= keep.sum() < len(keep)
    some = evaluate(store, match=ConfidenceMatch(tol=tol))
    assert some.pair_prompts["steward-s0__climber-s0"] == [i for i, k in zip(pair["prompt_ids"], keep, strict=True)
                                                          if k]
    (r,) = some.find("blackbox", "neg_margin")
    assert r.pair_scores["steward-s0__climber-s0"] == pytest.approx((-margins["a"][keep].mean(),
                                                                     -margins["f"][keep].mean()))


def test_plots_redrawn_from_the_store(full, tmp_path):
    store = ResultsStore.open(full[0])
    ev = evaluate(store)
    figs = {"layers": layer_figure(ev), "dose": dose_response_figure(store), "summary": summary_figure(ev)}
    assert len(figs["layers"].data) == 4  # 2 scales x (accuracy, AUROC)
    assert {t.name for t in figs["dose"].data} == {"aligned", "faker"}
    assert len(figs["summary"].data[0].y) == 3  # noise, random, blackbox (horizontal bars)
    paths, note = write_figures(figs, tmp_path)
    assert {p.name for p in paths} >= {"figures.html", "layers.html", "dose.html", "summary.html"} and "PNG" in note
    assert (tmp_path / "plotly.min.js").exists()  # per-figure HTML opens offline
    page = (tmp_path / "figures.html").read_text()
    assert page.count("<script src=") == 0 and page.count('id="fig-') == 3  # one page, plotly.js inside
    import shutil
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tmp_path / "figures.html", alone)  # opens on its own: nothing it needs lies beside it
    assert "Plotly.newPlot" in (alone / "figures.html").read_text() and len(page) > 1_000_000


def test_notebook_runs_top_to_bottom_on_the_tiny_testbed(testbed, monkeypatch, capsys):
    monkeypatch.setenv("POSER_INTERP_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("POSER_INTERP_TINY_TESTBED", str(testbed.root))
    ns = runpy.run_path(os.path.join(REPO, "notebooks", "noise_injection.py"), run_name="__main__")
    assert ns["TINY"] and len(ns["fig"].data) == 4
    assert "rel_margin_drop" in capsys.readouterr().out


def test_analysis_script_says_when_the_testbed_is_missing(tmp_path, capsys):
    ns = runpy.run_path(os.path.join(REPO, "analyses", "noise_injection.py"))
    assert ns["main"]([str(tmp_path / "nothing")]) == 2
    assert "no testbed at" in capsys.readouterr().out


def test_analysis_script_reports_a_held_out_choice(testbed, full, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(full[0], out)  # same options as the script's below: everything is read from the store
    ns = runpy.run_path(os.path.join(REPO, "analyses", "noise_injection.py"))
    args = [str(testbed.root), "--layers", "0,1", "--scales", "0.5,2", "--samples", "2", "--out", str(out)]
    assert ns["main"]([*args, "--match-confidence", "1e9"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "one split only: pairs halved by a hash" in text and "Held out (1 pairs): accuracy" in text
    assert "Held out, confidence-matched" in text and "prompts kept per pair" in text
    assert len((out / ROWS).read_text().splitlines()) == N_ROWS  # nothing was recomputed


def test_cli_detect_builds_every_strategy_for_the_base_depth(testbed, tmp_path):
    """All registered strategies run from the CLI on a 2-layer base (their defaults scale to its depth)."""
    names = "noise,probes,lens,attention,steering,learning_speed"
    result = CliRunner().invoke(app, ["detect", "--strategies", names, "--testbed", str(testbed.root), "--out",
                                      str(tmp_path / "all"), "--max-prompts", "3", "--seed", "3"])
    assert result.exit_code == 0, result.output
    for name in names.split(","):
        assert name in result.output
    configs = json.loads((tmp_path / "all" / "manifest.json").read_text())["config"]["strategies"]
    seeded = {name for name, c in configs.items() if "seed" in c}
    assert seeded == {"noise", "probes", "lens", "steering", "learning_speed", "random"}  # not attention, blackbox
    assert all(configs[name]["seed"] == 3 for name in seeded)  # --seed reaches every strategy that draws


def test_two_workers_store_the_same_rows_and_resume(testbed, tmp_path, one_thread):
    """Models computed in two 1-thread worker processes: the rows of a 1-thread run, bit for bit; a cut store
    is completed without redoing its rows."""
    ref = tmp_path / "one"
    run_detection(testbed, strategies(), ref, log=lambda _: None)
    logs: list[str] = []
    run_detection(testbed, strategies(), tmp_path / "two", log=logs.append, workers=2)
    assert rows_equal(ResultsStore.open(tmp_path / "two").rows(), ResultsStore.open(ref).rows())
    assert sorted(x.split(":")[0] for x in logs if "loaded" in x) == ["climber-s0", "grabber-s0", "steward-s0"]
    cut = tmp_path / "cut"
    shutil.copytree(ref, cut)
    lines = (cut / ROWS).read_text().splitlines(keepends=True)
    (cut / ROWS).write_text("".join(lines[:5]))
    before = {r.key for r in ResultsStore.open(cut).rows()}
    appended: list = []
    real_append = ResultsStore.append
    try:
        ResultsStore.append = lambda self, row: (appended.append(row.key), real_append(self, row))[1]  # type: ignore
        run_detection(testbed, strategies(), cut, log=lambda _: None, workers=2)
    finally:
        ResultsStore.append = real_append  # type: ignore[method-assign]
    assert len(appended) == N_ROWS - 5 and not set(appended) & before
    assert rows_equal(ResultsStore.open(cut).rows(), ResultsStore.open(ref).rows())
    with pytest.raises(StrategyError, match="no custom `load`"):
        run_detection(testbed, strategies(), tmp_path / "x", workers=2, load=testbed.load)


class _Benchmarks:
    """Just what `make_plan` reads of a testbed: pairs and their benchmarks (prompt ids only)."""

    def __init__(self, benches: dict[str, list[str]]):
        self.root = "fake"
        self.models = sorted({m for p in benches for m in p.split("__")})
        self.pairs = {p: {"aligned": p.split("__")[0], "faker": p.split("__")[1], "benchmark_size": len(b)}
                      for p, b in benches.items()}
        self._benches = benches

    def pair_ids(self, wanted=None):
        return sorted(self.pairs) if wanted is None else list(wanted)

    def benchmark(self, pair_id):
        from types import SimpleNamespace
        return [SimpleNamespace(id=i) for i in self._benches[pair_id]]


def test_a_capped_plan_keeps_the_prompts_its_pairs_share():
    from poser_interp.evaluation.runner import make_plan, prompt_order

    own = [f"p{i}" for i in range(40)]
    shared = ["s0", "s1", "s2"]  # in every pair's benchmark
    tb = _Benchmarks({"a0__f0": own[:10] + shared, "a0__f1": own[10:20] + shared, "a1__f0": own[20:30] + shared,
                      "a1__f1": own[30:40] + shared[:2]})
    plan = make_plan(tb, max_prompts=3)  # type: ignore[arg-type]
    first = sorted(shared[:2], key=prompt_order)  # in 4 benchmarks, before s2 (in 3)
    assert [plan.pairs[p]["prompt_ids"] for p in ("a0__f0", "a0__f1", "a1__f0")] == [first + ["s2"]] * 3
    last = plan.pairs["a1__f1"]["prompt_ids"]  # s0, s1 (in 4 benchmarks), then its first own prompt in order
    assert last == first + [min(own[30:40], key=prompt_order)]
    assert {m: len(p) for m, p in plan.prompts.items()} == {"a0": 3, "a1": 4, "f0": 3, "f1": 4}
    # the choice never depends on which pairs a run selects
    assert make_plan(tb, ["a1__f1"], max_prompts=3).pairs["a1__f1"]["prompt_ids"] == last  # type: ignore[arg-type]
    assert len(make_plan(tb).pairs["a1__f1"]["prompt_ids"]) == 12  # no cap: every benchmark prompt


def test_quick_run_stores_the_primary_and_a_full_run_fills_in_the_sweep(testbed, full, tmp_path, monkeypatch):
    """--quick: only each strategy's quick settings (noise: its primary), the same bits as a full run's rows; a later
    run without it on the same results computes the rest of the sweep and nothing twice."""
    out_full, ev_full, _ = full
    ev = run_detection(testbed, strategies(), tmp_path, log=lambda _: None, quick=True)
    store = ResultsStore.open(tmp_path)
    primary = ev_full.primary("noise").setting
    assert {(r.strategy, r.values.setting) for r in store.rows()} == {("noise", primary), ("random", Setting()),
                                                                      ("blackbox", Setting())}
    assert len(store) == 3 * 3
    assert rows_equal(store.rows(), [r for r in ResultsStore.open(out_full).rows()
                                     if r.strategy != "noise" or r.values.setting == primary])
    assert {r.setting for r in ev.find("noise")} == {primary}  # the unswept settings are left out, not NaN
    assert ev.primary("noise").summary.accuracy == ev_full.primary("noise").summary.accuracy

    real_append, appended = ResultsStore.append, []
    monkeypatch.setattr(ResultsStore, "append", lambda self, row: (appended.append(row.key), real_append(self, row))[1])
    run_detection(testbed, strategies(), tmp_path, log=lambda _: None)
    assert len(appended) == 3 * 3 and all(s == "noise" and key != primary.key for _, s, key in appended)
    assert rows_equal(ResultsStore.open(tmp_path).rows(), ResultsStore.open(out_full).rows())


def test_quick_settings_must_come_from_the_sweep(testbed, tmp_path, monkeypatch):
    noise = strategies()[0]
    monkeypatch.setattr(type(noise), "quick_settings", lambda self: (Setting.of(layer=9, scale=9.0),))
    with pytest.raises(StrategyError, match="quick_settings.*not in its sweep"):
        run_detection(testbed, [noise], tmp_path / "out", log=lambda _: None, quick=True)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_a_stored_config_from_before_an_option_counts_as_how_it_ran(tmp_path):
    """Probes rows stored before `shared_prefix` existed ran full forwards: they go with shared_prefix=False only,
    and the refusal names the flag that reuses them."""
    from poser_interp.evaluation.results import _merge

    cfg = strategy_base.config_dict(make("probes"))
    old = {"config": {"strategies": {"probes": {k: v for k, v in cfg.items() if k != "shared_prefix"}}}}
    as_before = {"config": {"strategies": {"probes": {**cfg, "shared_prefix": False}}}}
    assert _merge(old, as_before, tmp_path)["config"]["strategies"]["probes"]["shared_prefix"] is False
    with pytest.raises(DataError, match=r"shared_prefix stored \(before the option existed\) False, now True.*"
                                        r"detect -o probes\.shared_prefix=false"):
        _merge(old, {"config": {"strategies": {"probes": cfg}}}, tmp_path)
