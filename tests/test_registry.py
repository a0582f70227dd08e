"""The registry is the only way to build a strategy (issue 15): for_model defaults, options from config fields and
their docstrings, the CLI's --option and listings. No model is loaded here."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.errors import StrategyError
from poser_interp.strategies import build, known, make, options
from poser_interp.strategies.noise import NoiseConfig, default_layers


def test_build_scales_defaults_to_the_model_as_the_old_strategy_for_did():
    noise = build("noise", 30, 9, scales=(0.5, 2.0))
    assert noise.config == NoiseConfig(layers=default_layers(30), primary_layer=4, scales=(0.5, 2.0), primary_scale=2.0)
    assert build("noise", 30, 9).config.primary_scale == 1.0  # 1.0 when swept (the default sweep has it)
    assert build("noise", 2, 4, layers=(1,)).config.primary_layer == 1
    steering = build("steering", 30, 9).config
    assert steering.layers == (4, 10, 16, 22) and steering.primary_layer == 16 and steering.primary_alpha == 4.0
    assert build("steering", 30, 9, alphas=(1.0, 2.0)).config.primary_alpha == 2.0
    attention = build("attention", 2, 4).config
    assert attention.layers == (0, 1) and attention.heads == (0, 1, 2, 3) and attention.primary_layer == 1
    assert build("probes", 3, 4).config.layers == (0, 1, 2)
    assert build("learning_speed", 30, 9).config.upper_layers == 4
    assert build("learning_speed", 2, 4).config.upper_layers == 1
    assert build("lens", 2, 4).config == make("lens").config  # no model-dependent defaults
    with pytest.raises(StrategyError, match="has no option"):
        build("noise", 2, 4, alpha=1.0)
    with pytest.raises(StrategyError, match="unknown strategy"):
        build("telepathy", 2, 4)


def test_options_come_from_config_fields_and_docstrings():
    by_name = {o.name: o for o in options("noise")}
    assert "mean residual norm" in by_name["scales"].help and by_name["scales"].default == (0.25, 0.5, 1.0)
    assert by_name["scales"].parse("0.5, 2") == (0.5, 2.0) and by_name["layers"].parse("4,10") == (4, 10)
    assert by_name["positions"].parse("last") == "last" and by_name["samples"].parse("5") == 5
    with pytest.raises(StrategyError, match="not one of"):
        by_name["positions"].parse("first")
    assert {o.name: o for o in options("steering")}["data"].parse("none") is None
    with pytest.raises(StrategyError, match="nested config"):
        {o.name: o for o in options("lens")}["tuned"].parse("x")
    for name in known():
        assert all(o.help for o in options(name)), name  # every option of every strategy is documented


def test_detect_help_and_strategies_list_every_registered_strategy_and_option():
    help_text = CliRunner().invoke(app, ["detect", "--help"], env={"COLUMNS": "200"}).output
    for name in known():
        assert f"{name}:" in help_text
    assert "primary_scale" in help_text and "mean residual norm" in help_text  # --scales help is the docstring
    listing = CliRunner().invoke(app, ["strategies", "steering"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0 and "alphas" in listing.output and "Multiples of the raw direction" in listing.output
    bad = CliRunner().invoke(app, ["strategies", "telepathy"])
    assert bad.exit_code == 2 and "unknown strategy" in bad.output


@pytest.mark.parametrize(("option", "message"), [
    ("steering.alphas", "STRATEGY.FIELD=VALUE"),
    ("probes.layers=1", "not among the strategies run"),
    ("noise.alpha=1", "is not an option of noise"),
    ("noise.positions=first", "not one of"),
])
def test_detect_option_is_checked_before_anything_is_loaded(tmp_path, option, message):
    result = CliRunner().invoke(app, ["detect", "--testbed", str(tmp_path / "none"), "--out", str(tmp_path / "out"),
                                      "--option", option])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_stored_config_without_a_newer_option_ran_as_that_option_did_before_it():
    from poser_interp.strategies.registry import added_with_default

    # shared_prefix (default True) came after results were stored: those ran full forwards, i.e. as False
    assert added_with_default("probes", "shared_prefix", False)
    assert not added_with_default("probes", "shared_prefix", True)
    assert make("probes").config.shared_prefix is True
    # an option whose default is how runs always behaved: a stored config without it ran as the default
    assert added_with_default("probes", "heldout_fraction", 0.3)
    assert not added_with_default("probes", "heldout_fraction", 0.5)
    assert not added_with_default("no-such-strategy", "shared_prefix", False)


def test_the_flags_a_refusal_suggests_parse_back_to_the_stored_values():
    from poser_interp.strategies.registry import option_flag

    opts = {o.name: o for o in options("steering")}
    for option, value in [("norm", None), ("concept", "oversight"), ("layers", [4, 10]), ("shared_prefix", False),
                          ("alphas", [2.0, 8.0])]:
        flag = option_flag("steering", option, value)
        assert flag.startswith(f"-o steering.{option}=")
        assert opts[option].parse(flag.split("=", 1)[1]) == (tuple(value) if isinstance(value, list) else value)
