"""Detectors from outside the package: the example plugin installed into a temporary folder (no network) is listed,
runs in `detect` (also in worker processes and on Ray), has its figure and section on the suite page and enters the
held-out ensemble; broken plugins are refused in one line naming their package. The README's "Write a detector"
commands are the ones run here."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.errors import StrategyError
from poser_interp.strategies import registry

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "poser-interp-example-detector"


def readme_commands() -> list[list[str]]:
    """The shell commands of the README's "Write a detector" section, split into words (comments dropped)."""
    section = (REPO / "README.md").read_text().split("## Write a detector", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line.split("#", 1)[0].split() for line in block.splitlines() if line.split("#", 1)[0].strip()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example installed as the README says, into a temporary target folder (a copy of the source is built, so
    the working tree gets no build/ folder); without network or build isolation."""
    (pip, install, source), *_ = readme_commands()
    assert (pip, install) == ("pip", "install") and (REPO / source).resolve() == EXAMPLE
    tmp = tmp_path_factory.mktemp("plugin")
    shutil.copytree(EXAMPLE, tmp / "src")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "--target", str(tmp / "site"), str(tmp / "src")], check=True, env=_env())
    return tmp / "site"


def _env(path: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from typer.testing import CliRunner
    from poser_interp.cli import app
    from poser_interp.evaluation.ensemble import Fold, fit_fold
    from poser_interp.evaluation.results import ResultsStore
    from poser_interp.evaluation.runner import evaluate
    from poser_interp.strategies.registry import known

    testbed, out, commands, with_ray = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4] == "ray"
    report, runner = {"known": known()}, CliRunner()

    def invoke(args):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        return result.output

    for args in commands:  # the README's commands, on the tiny testbed
        extra = ["--testbed", testbed, "--out", str(out / "w1"), "--max-prompts", "4"] if args[0] == "detect" else []
        report.setdefault("readme", []).append(invoke(args + extra))
    runs = {"w2": ["--workers", "2"], "ray": ["--executor", "ray", "--workers", "2"] if with_ray else None}
    for w, extra in runs.items():
        if extra is not None:  # worker processes, and Ray (on this machine, started and ended by the run)
            invoke(["detect", "--testbed", testbed, "--strategies", "resid_norm", "--out", str(out / w),
                    "--max-prompts", "4", "--no-plots", *extra])
    report["rows"] = {w: sorted((r.model, r.values.setting.key, r.values.values["norm"].tolist())
                                for r in ResultsStore.open(out / w).rows("resid_norm"))
                      for w in ("w1", "w2", "ray") if (out / w).exists()}
    report["detect_figures"] = sorted(p.name for p in (out / "w1" / "figures").glob("*.html"))
    invoke(["suite", "--testbed", testbed, "--out", str(out / "w1"), "--strategies", "resid_norm", "--max-prompts",
            "4", "--match-confidence", "1e9"])
    report["page"] = (out / "w1" / "suite.html").read_text()
    store = ResultsStore.open(out / "w1")
    ev, pairs = evaluate(store, strategies=["resid_norm", "blackbox"]), store.manifest["pairs"]
    ids = tuple(sorted(pairs))
    fit = fit_fold(ev, Fold("every pair", ids, ids), pairs, ["resid_norm", "blackbox"])
    report["members"] = [r.strategy for r in fit.members]
    print("REPORT" + json.dumps(report))
''')


def test_the_example_plugin_runs_everywhere_a_builtin_does(installed, testbed, tmp_path):
    commands = [c[1:] for c in readme_commands() if c[0] == "poser-interp"]
    assert [c[0] for c in commands] == ["strategies", "detect"] and "resid_norm" in commands[1]
    with_ray = importlib.util.find_spec("ray") is not None  # the optional [ray] extra; without it, not tested
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(testbed.root), str(tmp_path), json.dumps(commands),
                           "ray" if with_ray else "-"], capture_output=True, text=True, env=_env(installed),
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT", 1)[1])
    assert "resid_norm" in report["known"]
    assert "resid_norm: Norm of the residual at the last prompt token" in report["readme"][0]
    assert "resid_norm" in report["readme"][1]  # detect's table has its row
    rows = report["rows"]
    assert rows["w1"] and rows["w1"] == rows["w2"] and set(rows) == {"w1", "w2", *(["ray"] if with_ray else [])}
    assert all(rows[w] == rows["w1"] for w in rows)  # worker processes and Ray: the same numbers
    assert "resid_norm_settings.html" in report["detect_figures"]  # the generic figure, written by detect
    page = report["page"]
    assert 'data-strategy="resid_norm"' in page and 'data-figure="resid_norm_settings"' in page
    assert re.search(r"<td>resid_norm</td><td>layer=1</td><td>norm \*</td>", page)  # the headline row
    assert "resid_norm" in report["members"]  # it enters the ensemble


def _fake_plugin(root: Path, dist: str, module: str, code: str) -> None:
    """A plugin distribution as importlib.metadata finds it: a dist-info folder with METADATA and entry points."""
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\nmine = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(code))


HEADER = """
        from dataclasses import dataclass
        from typing import ClassVar
        from poser_interp.strategies.base import StrategyBase, register
        from poser_interp.strategies.registry import StrategyConfig
"""
BROKEN = {
    "import": ("import poser_interp_no_such_module\n", "failed to import: ModuleNotFoundError: No module named "
                                                       "'poser_interp_no_such_module'; fix or uninstall {dist}"),
    "taken": (HEADER + """
        @dataclass(frozen=True)
        class Config(StrategyConfig):
            pass

        @register(Config)
        class Mine(StrategyBase[Config]):
            name: ClassVar[str] = "noise"
    """, "strategy name 'noise' of {module}.Mine is taken by poser_interp.strategies.noise.NoiseStrategy; rename"),
    "undocumented": (HEADER + """
        @dataclass(frozen=True)
        class Config(StrategyConfig):
            layer: int = 0

        @register(Config)
        class Mine(StrategyBase[Config]):
            name: ClassVar[str] = "mine_undocumented"
    """, "config Config fields ['layer'] have no docstring"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plugin_is_refused_in_one_line_naming_its_package(case, tmp_path, monkeypatch):
    code, expected = BROKEN[case]
    dist, module = f"broken-{case}-plugin", f"broken_{case}_plugin"
    _fake_plugin(tmp_path, dist, module, code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(StrategyError) as e:
        registry.known()
    message = str(e.value)
    assert f"strategy plugin 'mine' (package {dist})" in message and "\n" not in message
    assert expected.format(dist=dist, module=module) in message
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    result = CliRunner().invoke(app, ["strategies"])  # the command line: exit 2 and that one line
    assert result.exit_code == 2 and f"(package {dist})" in result.output
    assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1
    sys.modules.pop(module, None)
