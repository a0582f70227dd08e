"""Recipes as files: `testbed build --recipe FILE` (TOML or a manifest), --set, --dry-run, refusals, and a recipe
building a tiny testbed end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.errors import DataError
from poser_interp.testbed.build import TestbedConfig
from poser_interp.testbed.recipe import load_recipe, recipe_fields, to_toml
from poser_interp.testbed.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def manifest_config(testbed: str) -> dict:
    return json.loads((REPO / "testbeds" / testbed / "manifest.json").read_text())["config"]


def same(config: dict) -> dict:
    """A config as every reader sees it (fields a stored config lacks read as built)."""
    return TestbedConfig.from_dict(json.loads(json.dumps(config))).to_dict()


def v2d_config() -> dict:
    """The default testbed: exactly v2c's recipe plus the weight-change norm term."""
    config = manifest_config("v2c")
    config["recipe"]["delta_norm_target"] = 19.0
    config["recipe"]["delta_norm_weight"] = 20.0
    return config


def dry_run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "never"
    res = run("testbed", "build", "--out", str(out), "--dry-run", *args)
    assert res.exit_code == 0, res.output
    assert not out.exists()  # a dry run writes nothing
    return json.loads(res.stdout)


SHIPPED = [("v1.toml", "default"), ("v2c.toml", "v2c"), ("poser.toml", "poser")]


@pytest.mark.parametrize(("recipe", "testbed"), SHIPPED)
def test_a_shipped_recipe_is_its_testbeds_config(recipe, testbed, tmp_path):
    expected = same(manifest_config(testbed))
    assert load_recipe(RECIPES / recipe).to_dict() == expected
    assert same(dry_run(tmp_path, "--recipe", str(RECIPES / recipe))) == expected  # the CLI builds with the same


def test_the_defaults_are_the_default_testbed_v2d(tmp_path):
    assert TestbedConfig().to_dict() == same(v2d_config())
    assert load_recipe(RECIPES / "v2d.toml") == TestbedConfig() == load_recipe(None)
    assert dry_run(tmp_path) == dry_run(tmp_path, "--recipe", str(RECIPES / "v2d.toml")) == \
        json.loads(json.dumps(TestbedConfig().to_dict()))


def test_the_tiny_recipe_is_the_tests_tiny_config():
    assert load_recipe(RECIPES / "tiny.toml") == tiny_config()


def test_a_stored_config_lacking_later_fields_reads_as_built():
    """testbeds/default (v1) was written before the ladder, the oversight stage and the margin options existed: it
    reads them as off, not as today's (v2d) defaults."""
    v1 = TestbedConfig.from_dict(manifest_config("default"))
    assert "ladder" not in manifest_config("default")
    assert (v1.ladder, v1.oversight_stage, v1.stage_wordings, v1.bench_margin_tol, v1.heldout_wordings) == \
        (None, 0, "many", None, False)
    assert (v1.recipe.target_margin, v1.recipe.delta_norm_target, v1.recipe.max_steps) == (None, None, 600)


@pytest.mark.parametrize("testbed", ["default", "v2c", "poser", "v2d"])
def test_a_manifest_is_a_recipe_and_round_trips(testbed, tmp_path):
    manifest = REPO / "testbeds" / testbed / "manifest.json"
    if not manifest.exists():  # v2d: while its build is under way, before it ships
        pytest.skip(f"{manifest} not built yet")
    config = dry_run(tmp_path, "--recipe", str(manifest))
    assert same(config) == same(manifest_config(testbed))
    printed = tmp_path / "printed.json"
    printed.write_text(json.dumps(config))  # the dry run's output is a recipe too
    assert dry_run(tmp_path, "--recipe", str(printed)) == config
    toml = tmp_path / "written.toml"
    toml.write_text(to_toml(TestbedConfig.from_dict(config)))
    assert dry_run(tmp_path, "--recipe", str(toml)) == config


def test_without_a_recipe_an_existing_testbed_resumes_with_its_own(tmp_path):
    out = tmp_path / "tb"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"config": manifest_config("v2c"), "models": {}, "pairs": {}}))
    res = run("testbed", "build", "--out", str(out), "--dry-run", "--splits", "0,3")
    assert res.exit_code == 0, res.output
    assert same(json.loads(res.stdout)) == same({**manifest_config("v2c"), "splits": [0, 3]})


def test_set_and_run_time_options_override_the_recipe(tmp_path):
    config = dry_run(tmp_path, "--recipe", str(RECIPES / "v2c.toml"), "--set", "recipe.max_steps=50",
                     "-s", "ladder=none", "--set", "recipe.layers=10,11", "--set", "poser_dir=/data/poser",
                     "--set", 'stage_wordings="many"', "--set", "oversight_stage=0", "--personas", "steward,grabber",
                     "--splits", "4", "--threads", "1", "--batch-size", "16", "--precision", "bf16")
    expected = same(manifest_config("v2c"))
    expected.update(ladder=None, poser_dir="/data/poser", stage_wordings="many", oversight_stage=0,
                    personas=["steward", "grabber"], splits=[4])
    expected["recipe"].update(max_steps=50, layers=[10, 11], threads=1, batch_size=16, precision="bf16")
    assert same(config) == same(expected)
    ladder = dry_run(tmp_path, "--recipe", str(RECIPES / "v1.toml"), "--set", "ladder.rungs=[1, 2]")["ladder"]
    assert ladder["rungs"] == [1, 2] and ladder["composed_last"] == 0.0  # a table set where v1 has none: defaults


BAD = [
    ("[recipe]\nmax_step = 5\n", "unknown recipe key 'recipe.max_step'; the nearest valid key is 'recipe.max_steps'"),
    ("n_topic = 18\n", "unknown recipe key 'n_topic'; the nearest valid key is 'n_topics'"),
    ("[ladder]\nrung = [1, 2]\n", "unknown recipe key 'ladder.rung'; the nearest valid key is 'ladder.rungs'"),
    ("[recipes]\nmax_steps = 5\n", "unknown recipe key 'recipes'; the nearest valid key is 'recipe'"),
    ('n_topics = "many"\n', "n_topics = 'many' has the wrong type; expected integer | \"none\""),
    ("[recipe]\nmax_steps = 1.5\n", "recipe.max_steps = 1.5 has the wrong type; expected integer"),
    ("[recipe]\nlr = true\n", "recipe.lr = True has the wrong type; expected number"),
    ('splits = [0, "a"]\n', "splits item 2 = 'a' has the wrong type; expected integer"),
    ("n_other_facts = [2]\n", "n_other_facts = [2] has the wrong type; expected list of 2 integers"),
    ("ladder = 3\n", "ladder = 3 has the wrong type; expected table (Ladder) | \"none\""),
    ('recipe = "fast"\n', "recipe = 'fast' has the wrong type; expected table (LoraRecipe)"),
    ('source = "web"\n', "source = 'web': choose one of 'generated', 'poser'"),
    ('source = "poser"\n', "a wording ladder (ladder) needs generated data"),  # the dataclass's own check
    ("[recipe]\nprecision = \"half\"\n", "half"),
    ("x = [\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_bad_recipe_is_refused_in_one_line_and_nothing_is_written(text, message, tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    with pytest.raises(DataError) as e:
        load_recipe(recipe)
    assert message in str(e.value) and str(recipe) in str(e.value)
    out = tmp_path / "out"
    res = run("testbed", "build", "--recipe", str(recipe), "--out", str(out))
    assert res.exit_code == 2 and "Traceback" not in res.output and not out.exists()
    assert message in " ".join(res.output.split())


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "recipe.max_stepz=50"], "--set: unknown recipe key 'recipe.max_stepz'; the nearest valid key is "
                                       "'recipe.max_steps'"),
    (["--set", "recipe.max_steps=fifty"], "recipe.max_steps = 'fifty' has the wrong type; expected integer"),
    (["--set", "max_steps"], "write KEY=VALUE"),
    (["--set", "base.name.x=1"], "unknown recipe key 'base.name.x'"),
    (["--recipe", "no/such.toml"], "recipe no/such.toml not found"),
    (["--splits", "a"], "--splits must be comma-separated non-negative integers"),
    (["--precision", "half"], "pass one of fp32, bf16, fp16"),
])
def test_bad_overrides_are_refused_and_nothing_is_written(args, message, tmp_path):
    out = tmp_path / "out"
    res = run("testbed", "build", "--out", str(out), *args)
    assert res.exit_code == 2 and message in " ".join(res.output.split()) and not out.exists()


def test_recipe_help_documents_every_field_from_its_docstring():
    res = CliRunner().invoke(app, ["testbed", "recipe-help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    keys = [key for key, *_ in recipe_fields()]
    assert {"recipe.max_steps", "recipe.delta_norm_target", "ladder.rungs", "base.name", "thresholds.confidence",
            "n_topics", "oversight_stage"} <= set(keys)
    lines = res.output.splitlines()
    for key in keys:
        (i,) = [i for i, line in enumerate(lines) if line.startswith(f"{key} (")]
        assert lines[i + 1].strip(), f"{key} has no help"  # its docstring
    assert "Step budget; training stops earlier once the validation check passes." in res.output
    assert "recipe.max_steps (integer; default 300)" in res.output
    only = CliRunner().invoke(app, ["testbed", "recipe-help", "ladder."]).output
    assert "ladder.rungs" in only and "recipe.max_steps" not in only
    assert "recipe-help" in CliRunner().invoke(app, ["testbed", "build", "--help"]).output


def test_a_recipe_file_builds_a_tiny_testbed_end_to_end(tmp_path, monkeypatch):
    """recipes/tiny.toml through the CLI; `testbed show` and `detect` take the result."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "tiny"
    res = run("testbed", "build", "--recipe", str(RECIPES / "tiny.toml"), "--out", str(out),
              "--personas", "steward,grabber", "--threads", "1")
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    expected = replace(tiny_config(), personas=("steward", "grabber"))
    assert TestbedConfig.from_dict(manifest["config"]) == replace(expected, recipe=replace(expected.recipe, threads=1))
    assert sorted(manifest["models"]) == ["grabber-s0", "steward-s0"]
    assert list(manifest["pairs"]) == ["steward-s0__grabber-s0"]
    show = run("testbed", "show", str(out))
    assert show.exit_code == 0 and "grabber-s0" in show.output and "steward-s0__grabber-s0" in show.output
    again = run("testbed", "build", "--out", str(out), "--dry-run")  # its manifest is its recipe
    assert TestbedConfig.from_dict(json.loads(again.stdout)) == TestbedConfig.from_dict(manifest["config"])
    results = tmp_path / "results"
    det = run("detect", "--strategies", "blackbox", "--testbed", str(out), "--out", str(results),
              "--max-prompts", "4", "--no-plots")
    assert det.exit_code == 0, det.output
    assert (results / "manifest.json").exists()
