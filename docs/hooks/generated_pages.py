"""mkdocs hooks (`hooks:` in mkdocs.yml): pages generated at build time, nothing written into docs/.

- `cli.md`: the CLI reference, read from the typer app as click sees it: every command and command group, its
  help, usage line and every option and argument with its default and help. Nothing in it is written by hand.
- `research/*.md`: the research notes and their index, read from `research/` (outside `docs/`), with their links
  to the repository's README and to `docs/img/` pointed at the site's pages; listed in the nav under "Research".
- `<!-- strategy-options: NAME -->` in a page: the options table of that registered strategy (its config fields,
  defaults and field docstrings, as `poser-interp strategies NAME` prints them).
- `<!-- module-table -->` in a page: every module of the package with the first line of its docstring (read with
  `ast`, nothing imported).
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
RESEARCH = REPO / "research"
SKIP_OPTIONS = {"help", "install_completion", "show_completion"}


def on_config(config: Any) -> Any:
    """Fill the nav's "Research" entry with every note, newest first after the index."""
    notes = [{_title(p.read_text(), p.stem): f"research/{p.name}"}
             for p in sorted(RESEARCH.glob("*.md"), reverse=True) if p.name != "README.md"]
    for i, item in enumerate(config["nav"] or []):
        if isinstance(item, dict) and "Research" in item:
            config["nav"][i] = {"Research": [{"Index": "research/README.md"}, *notes]}
    return config


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    for note in sorted(RESEARCH.glob("*.md")):
        files.append(File.generated(config, f"research/{note.name}", content=research_page(note.read_text())))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    markdown = markdown.replace("<!-- module-table -->", module_table())
    return re.sub(r"<!-- strategy-options: (\w+) -->", lambda m: options_table(m.group(1)), markdown)


# --- module table ---------------------------------------------------------------------------------------------------
def module_table() -> str:
    rows = ["| module | what it is |", "|---|---|"]
    for path in sorted((REPO / "poser_interp").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        rows.append(f"| `{name}` | {_cell((doc or '').split(chr(10) * 2)[0])} |")
    return "\n".join(rows)


# --- research notes -------------------------------------------------------------------------------------------------
def _title(text: str, default: str) -> str:
    m = re.search(r"^# (.+)$", text, flags=re.M)
    return m.group(1).strip() if m else default


def research_page(text: str) -> str:
    """A note as a site page: images from docs/img and links to the top-level README resolved inside the site; links
    to log files and folders and to the experiment scripts' index (not pages) shown as their repository paths."""
    text = text.replace("](../docs/img/", "](../img/")
    text = text.replace("](../README.md)", "](../index.md)")
    return re.sub(r"\[([^\]]+)\]\(((?:logs|experiments)/[^)]*)\)", r"\1 (`research/\2`)", text)


# --- strategy options -----------------------------------------------------------------------------------------------
def options_table(name: str) -> str:
    from poser_interp.strategies.registry import options, strategy_help

    rows = [f"*{_cell(strategy_help(name))}*", "", "| option | default | meaning |", "|---|---|---|"]
    rows += [f"| `{o.name}` | `{o.default!r}` | {_cell(o.help)} |" for o in options(name)]
    return "\n".join(rows)


# --- CLI reference --------------------------------------------------------------------------------------------------
def cli_reference() -> str:
    import typer

    from poser_interp.cli import app

    root = typer.main.get_command(app)  # a click command (typer's own copy of click)
    out = ["# CLI reference", "",
           "Generated from the `poser-interp` command line itself (its typer app, read as a click command) each time "
           "the docs are built; `poser-interp COMMAND --help` prints the same.", ""]
    for path, command, ctx in _walk(root, root.context_class(root, info_name="poser-interp")):
        level = "#" * min(len(path) + 1, 4)
        out += [f"{level} {' '.join(path)}", ""]
        out += [f"```text\n{' '.join(path)} {' '.join(command.collect_usage_pieces(ctx))}\n```", ""]
        if command.help:
            out += [_text(inspect.cleandoc(command.help)), ""]
        params = [p for p in command.params if p.name not in SKIP_OPTIONS]
        if params:
            out += ["| option | type | default | meaning |", "|---|---|---|---|"]
            out += [_param_row(p, ctx) for p in params] + [""]
        if _is_group(command):
            out += ["| command | what it does |", "|---|---|"]
            out += [f"| `{name}` | {_cell(sub.get_short_help_str(120))} |" for name, sub in _subcommands(command, ctx)]
            out += [""]
    return "\n".join(out)


def _is_group(command: Any) -> bool:
    return hasattr(command, "list_commands")


def _walk(command: Any, ctx: Any,
          path: tuple[str, ...] = ("poser-interp",)) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    yield path, command, ctx
    if _is_group(command):
        for name, sub in _subcommands(command, ctx):
            yield from _walk(sub, sub.context_class(sub, info_name=name, parent=ctx), (*path, name))


def _subcommands(group: Any, ctx: Any) -> list[tuple[str, Any]]:
    found = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    return [(name, sub) for name, sub in found if sub is not None and not sub.hidden]


def _param_row(p: Any, ctx: Any) -> str:
    if p.param_type_name == "option":
        names = ", ".join(f"`{n}`" for n in [*p.opts, *p.secondary_opts])
        default = "required" if p.required else "" if p.default is None or (
            p.is_flag and not p.default and not p.secondary_opts) else f"`{_default(p.default)}`"
        kind = "flag" if p.is_flag else _kind(p)
        help_text = p.help or ""
    else:
        names, default, kind = f"`{(p.name or '').upper()}` (argument)", "", _kind(p)
        help_text = getattr(p, "help", None) or ""
        default = "required" if p.required else "" if p.default is None else f"`{_default(p.default)}`"
    return f"| {names} | {kind} | {default} | {_cell(help_text)} |"


def _kind(p: Any) -> str:
    """The value's type as the annotation says it (typer's own parameters), else click's type name."""
    annotation = getattr(getattr(p, "type_descriptor", None), "annotation", None)
    if annotation is None:
        return str(getattr(getattr(p, "type", None), "name", ""))
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return text.replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")


def _default(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "(none)"
    return str(value.value if hasattr(value, "value") else value)


def _text(text: str) -> str:
    """Help text as Markdown: angle brackets outside code spans escaped (so `<testbed>` is not read as HTML)."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def _cell(text: str) -> str:
    return _text(" ".join(text.split())).replace("|", "\\|")
