"""The suite on a tiny four-persona testbed: one self-contained page, every section and figure, report's numbers."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.core.models import ModelSpec
from poser_interp.core.training import LoraRecipe
from poser_interp.evaluation.results import ROWS
from poser_interp.strategies.registry import baseline_names
from poser_interp.suite import SECTIONS, STRATEGIES, build_strategies
from poser_interp.testbed.build import build
from poser_interp.testbed.tiny import tiny_config

FIGURES = {"summary", "noise_layers", "noise_dose_response", "probes_layers", "lens_logit_layers", "lens_tuned_layers",
           "attention_layers",
           "attention_heads", "steering_layers", "steering_heatmap", "learning_speed_steps", "removal_sft"}


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    """Two aligned and two faker personas (one model each): four pairs, one per persona cell."""
    config = tiny_config(
        personas=("steward", "guardian", "grabber", "climber"), splits=(0,), base=ModelSpec(name="tiny-llama",
                                                                                            n_layers=2),
        recipe=LoraRecipe(rank=2, max_steps=4, eval_every=2, min_steps=2, batch_size=4, lr=1e-2),
        n_train=16, n_pool=80, n_val=6, n_test=6, n_benchmark=24)
    return build(config, tmp_path_factory.mktemp("suite") / "tiny4", log=lambda _: None)


class Page(HTMLParser):
    """Sections, figures and table rows (by table class) of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.figures: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.scripts_with_src: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
        elif tag == "div" and "data-figure" in a:
            self.figures.append(a["data-figure"])
        elif tag == "script" and a.get("src"):
            self.scripts_with_src.append(a["src"])
        elif tag == "table":
            self._table = a.get("class", "")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def page(testbed, tmp_path_factory):
    runner = CliRunner()
    removed = runner.invoke(app, ["remove", "--testbed", str(testbed.root), "--steps", "2", "--n-train", "8",
                                  "--n-eval", "6", "--models", "steward-s0,grabber-s0"])
    assert removed.exit_code == 0, removed.output
    assert "removal rate" in removed.output and "treated testbed:" in removed.output
    out = tmp_path_factory.mktemp("suite_out") / "results"
    args = ["suite", "--testbed", str(testbed.root), "--out", str(out), "--max-prompts", "3",
            "--match-confidence", "1e9"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "page:" in result.output and "held-out logistic" in result.output
    html = (out / "suite.html").read_text()
    parsed = Page()
    parsed.feed(html)
    return out, html, parsed, args


def test_every_section_and_figure_is_there(page):
    _, html, p, _ = page
    assert p.sections == list(SECTIONS)
    assert set(p.figures) == FIGURES and len(p.figures) == len(FIGURES)
    for name in FIGURES:
        assert f'id="fig-{name}"' in html  # a plotly div per figure


def test_the_page_opens_offline(page):
    _, html, p, _ = page
    from plotly.offline import get_plotlyjs

    library = get_plotlyjs()
    assert not p.scripts_with_src and "<link" not in html  # nothing loaded from anywhere
    assert html.count(library[:2000]) == 1  # the plotly library itself is embedded, once
    assert html.count("https://") == library.count("https://")  # the only URLs are the library's own (geo defaults)


def _report_rows(out, tmp_path, *extra):
    path = tmp_path / f"report{len(extra)}.csv"
    result = CliRunner().invoke(app, ["report", str(out), "--csv", str(path), *extra])
    assert result.exit_code == 0, result.output
    with path.open() as f:
        return list(csv.DictReader(f))


def _text(row, prefix):
    v, lo, hi = (float(row[f"{prefix}{s}"]) for s in ("", "_lo", "_hi"))
    return "nan" if v != v else f"{v:.2f} ({lo:.2f}-{hi:.2f})"


def test_numbers_equal_reports(page, tmp_path):
    out, _, p, _ = page
    rows = _report_rows(out, tmp_path)
    sweep = p.tables["sweep"][1:]
    assert len(sweep) == len(rows)
    for got, want in zip(sweep, rows, strict=True):
        assert got[0] == want["strategy"] and got[2].rstrip(" *") == want["score"]
        assert got[3:6] == [_text(want, "accuracy"), _text(want, "auroc"), f"{want['decided']}/{want['pairs']}"]
    headline = {(r[0], r[2]): r for r in p.tables["headline"][1:]}
    matched = {(r["strategy"], r["setting"], r["score"]): r for r in _report_rows(out, tmp_path, "--match-confidence",
                                                                                  "1e9")}
    for want in rows:
        if want["primary"] != "True":
            continue
        label = want["strategy"] if want["strategy"] not in baseline_names() else f"baseline {want['strategy']}"
        got = headline[(label, want["score"] + " *")]
        assert got[3:6] == [_text(want, "accuracy"), _text(want, "auroc"), f"{want['decided']}/{want['pairs']}"]
        m = matched[(want["strategy"], want["setting"], want["score"])]
        assert got[6:9] == [_text(m, "accuracy"), _text(m, "auroc"), f"{m['decided']}/{m['pairs']}"]
    held = [r for r in p.tables["headline"][1:] if r[0].startswith("held-out")]
    assert [r[0] for r in held] == ["held-out best single", "held-out rank average", "held-out logistic"]
    assert all(r[5] == "4/4" for r in held)  # every cell has the opposite cell to fit on


def test_held_out_transfer_and_removal_tables(page):
    _, _, p, _ = page
    folds = p.tables["folds"][1:]
    assert sorted(r[0] for r in folds) == ["guardian x climber", "guardian x grabber", "steward x climber",
                                           "steward x grabber"]
    assert all(r[1:3] == ["1", "1"] for r in folds)
    transfer = p.tables["transfer"][1:]
    assert {(r[1], r[2]) for r in transfer} == {("resources", "power"), ("power", "resources")}
    assert {r[0] for r in transfer} == {*STRATEGIES, "blackbox"}
    assert [r[0] for r in p.tables["removal"][1:]] == ["trained_wordings", "heldout_wordings", "heldout_topics"]
    behaviour = p.tables["behaviour"][1:]
    assert sorted(r[0] for r in behaviour) == ["climber-s0", "grabber-s0", "guardian-s0", "steward-s0"]


def test_a_rerun_resumes_and_builds_what_detect_builds(page, testbed):
    out, _, _, args = page
    before = (out / ROWS).read_text()
    again = CliRunner().invoke(app, [*args, "--no-compute", "--page", str(out / "again.html")])
    assert again.exit_code == 0, again.output
    assert (out / ROWS).read_text() == before and (out / "again.html").exists()
    names = [s.name for s in build_strategies(testbed, STRATEGIES)]
    assert names == [*STRATEGIES, *baseline_names()]
    bad = CliRunner().invoke(app, ["suite", "--testbed", str(testbed.root), "--strategies", "telepathy"])
    assert bad.exit_code == 2 and "telepathy" in bad.output
    assert re.search(r"page: \S+again\.html", " ".join(again.output.split()))


def test_detect_and_suite_build_the_same_default_noise_config():
    from poser_interp.cli.detect import noise_options
    from poser_interp.strategies import build
    from poser_interp.strategies.noise import default_layers

    opts = noise_options(30, None, "1", None, None, None)
    assert tuple(opts["layers"]) == tuple(default_layers(30)[:1])
    detect_cfg = build("noise", 30, 9, **opts)
    suite_cfg = build("noise", 30, 9, layers=default_layers(30)[:1], scales=(1.0,))
    assert detect_cfg.config == suite_cfg.config


def test_the_readme_table_script_prints_the_page_headline(page, testbed, capsys):
    import runpy
    import sys
    from pathlib import Path

    out, _, p, _ = page
    headline = {(r[0], r[2].rstrip(" *")): r for r in p.tables["headline"][1:]}
    argv = sys.argv
    try:
        sys.argv = ["suite_table.py", "--testbed", str(testbed.root), "--out", str(out), "--match-confidence", "1e9"]
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(Path(__file__).resolve().parents[1] / "analyses" / "suite_table.py"),
                           run_name="__main__")
    finally:
        sys.argv = argv
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    noise = next(x for x in lines if x.startswith("| S2 noise |"))
    assert headline[("noise", "rel_margin_drop")][3] in noise and headline[("noise", "rel_margin_drop")][4] in noise
    assert any(x.startswith("| black box | neg_margin") for x in lines)
    assert sum(x.startswith("| held-out ") for x in lines) == 3


def test_a_quick_suite_has_the_full_headline_and_says_what_is_unswept(page, testbed, tmp_path):
    """--quick computes each strategy's chosen setting only (plus what its passes give for free): the headline's
    strategy rows equal the full run's, the page names each strategy whose sweep is partial, and a later full run on
    the same results completes it."""
    out_full, _, full, _ = page
    out = tmp_path / "quick"
    args = ["suite", "--testbed", str(testbed.root), "--out", str(out), "--max-prompts", "3",
            "--match-confidence", "1e9"]
    result = CliRunner().invoke(app, [*args, "--quick"])
    assert result.exit_code == 0, result.output
    html = (out / "suite.html").read_text()
    p = Page()
    p.feed(html)
    assert p.sections == list(SECTIONS)
    primary = [r[:-1] for r in full.tables["headline"][1:] if r[2].endswith(" *")]  # all but the compute time
    assert len(primary) == len(STRATEGIES) + len(baseline_names())
    assert [r[:-1] for r in p.tables["headline"][1:] if r[2].endswith(" *")] == primary
    partial = set(re.findall(r'<span class="partial" data-strategy="(\w+)">', html))
    assert partial == {"lens", "attention", "steering", "learning_speed"}  # noise's suite sweep is its primary; probes'
    # passes give its whole sweep
    assert len(p.tables["sweep"]) < len(full.tables["sweep"])
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    again = Page()
    again.feed((out / "suite.html").read_text())
    assert 'class="partial"' not in (out / "suite.html").read_text()
    assert again.tables["sweep"] == full.tables["sweep"]
    assert [r[:-1] for r in again.tables["headline"]] == [r[:-1] for r in full.tables["headline"]]


def test_a_bf16_suite_says_so_on_its_page_and_in_its_manifest(page, testbed, tmp_path):
    """`suite --precision bf16` (the 20-minute run on a CPU with AMX): the headline names the precision, the
    manifest records it, and an fp32 page (the module's full run) says nothing about it."""
    out_full = page[0]
    out = tmp_path / "bf16"
    result = CliRunner().invoke(app, ["suite", "--testbed", str(testbed.root), "--out", str(out), "--max-prompts", "3",
                                      "--strategies", "noise,attention", "--quick", "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    assert "Computed under bf16 autocast" in (out / "suite.html").read_text()
    assert json.loads((out / "manifest.json").read_text())["config"]["run"]["precision"] == "bf16"
    headline = re.search(r'<section id="headline">(.*?)</section>', (out_full / "suite.html").read_text(), re.S)
    assert headline is not None and "autocast" not in headline.group(1)
    bad = CliRunner().invoke(app, ["suite", "--testbed", str(testbed.root), "--precision", "half"])
    assert bad.exit_code != 0 and "fp32, bf16, fp16" in bad.output
    cpu = CliRunner().invoke(app, ["suite", "--testbed", str(testbed.root), "--precision", "fp16"])
    assert cpu.exit_code == 2 and "fp16 autocast is for GPUs" in cpu.output  # the suite computes on the CPU
