"""The scripts beside the package: every `*.py` in analyses/, research/experiments/ and bench/ answers `--help`
(exit 0, argparse's usage or its own docstring's first line in the output, so a script that ignores the flag and runs
fails), every `*.sh` there parses (`bash -n`), and the two indexes (analyses/README.md, research/experiments/README.md)
list every script of their folder and link only files that exist."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("analyses", "research/experiments", "bench")
INDEXED = ("analyses", "research/experiments")


def _scripts(suffix: str) -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO / folder).glob(f"*{suffix}"))


def _run_all(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """The commands two at a time (2 cores), one thread each, OMP_NUM_THREADS=1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}

    def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(run, commands))


def test_every_python_script_answers_help(tmp_path):
    scripts = _scripts(".py")
    assert len(scripts) >= 20, scripts  # the folders moved or emptied: update FOLDERS
    # run from an empty folder: a script that ignored --help and ran would write there, not into the repository
    results = _run_all([[sys.executable, str(p), "--help"] for p in scripts], tmp_path)
    bad = []
    for path, r in zip(scripts, results, strict=True):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        first = " ".join(doc.splitlines()[0].split()) if doc else ""
        out = " ".join(r.stdout.split())
        helped = out.startswith("usage: ") or bool(first) and first in out
        if r.returncode != 0 or not helped:
            bad.append(f"{path.relative_to(REPO)}: exit {r.returncode}, help printed: {helped}\n"
                       f"{(r.stdout + r.stderr)[-600:]}")
    assert not bad, "scripts whose --help fails (scripts without argparse print __doc__ on -h/--help):\n" + \
        "\n".join(bad)
    assert not list(tmp_path.iterdir()), "a script wrote files on --help"


def test_every_shell_script_parses():
    scripts = _scripts(".sh")
    assert scripts
    results = _run_all([["bash", "-n", str(p)] for p in scripts], REPO)
    bad = [f"{p.relative_to(REPO)}: {r.stderr}" for p, r in zip(scripts, results, strict=True) if r.returncode]
    assert not bad, "\n".join(bad)


def test_indexes_list_every_script_and_link_only_files_that_exist():
    for folder in INDEXED:
        index = REPO / folder / "README.md"
        text = index.read_text()
        scripts = sorted(p.name for p in (REPO / folder).iterdir() if p.suffix in (".py", ".sh"))
        missing = [name for name in scripts if f"`{name}`" not in text and f"[{name}]" not in text]
        assert not missing, f"{index.relative_to(REPO)} does not list {missing}"
        targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
        broken = [t for t in targets if t and not (index.parent / t).exists()]
        assert not broken, f"{index.relative_to(REPO)} links files that do not exist: {broken}"
