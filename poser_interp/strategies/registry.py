"""The strategy registry: the one way to build a strategy, by name, from typed config options.

A strategy module registers its class with its frozen config dataclass (`@register(Config)`). `build` makes a
strategy for a model's shape: `Config.for_model(n_layers, n_heads, **options)` scales defaults that depend on the
model (layers to sweep, heads, trained layers) and checks every option. `make` builds from exact options (a stored
config: `from_config`). The CLI's `--strategies` and `--option`, the suite and the analyses all come through here;
`options(name)` gives each config field with its type, default and docstring, which is the help text.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar, Literal, Self

from ..errors import StrategyError

_REGISTRY: dict[str, tuple[type, type]] = {}

ENTRY_POINT_GROUP = "poser_interp.strategies"
"""Installed packages add strategies through this entry-point group: each entry point names a module (or an object
in it) whose import registers strategies with `register`, e.g. in a plugin's pyproject.toml:
`[project.entry-points."poser_interp.strategies"] mine = "my_detector"`."""

_plugins_loaded = False


class StrategyConfig:
    """Base of strategy configs (frozen dataclasses whose field docstrings are the help text)."""

    ran_before: ClassVar[Mapping[str, Any]] = {"shared_prefix": False}
    """Options added after results were first stored whose default is not how runs behaved before them: a stored
    config without the option ran with this value (any other missing option ran as its default)."""

    @classmethod
    def for_model(cls, n_layers: int, n_heads: int, **options: Any) -> Self:
        """This config for a model with `n_layers` layers and `n_heads` attention heads (defaults that depend on
        the model are scaled to it; given options win). Configs without such defaults take the options as they are."""
        return cls(**options)

    def shape_problems(self, n_layers: int, n_heads: int) -> list[str]:
        """[] when every layer and head this config names exists in a model of this shape, else the problems (the
        fields checked: `layers`, `primary_layer`, `heads`, `upper_layers`), so that a bad `-o` value is refused
        before anything loads."""
        problems = []
        for name, value in ((f.name, getattr(self, f.name)) for f in fields(self)):  # type: ignore[arg-type]
            values = value if isinstance(value, tuple) else (value,)
            if name in ("layers", "primary_layer"):
                bad = [v for v in values if isinstance(v, int) and not 0 <= v < n_layers]
                if bad:
                    problems.append(f"{name}: layer {bad[0]} does not exist: the testbed's base model has "
                                    f"layers 0..{n_layers - 1}")
            elif name == "heads":
                bad = [v for v in values if isinstance(v, int) and not 0 <= v < n_heads]
                if bad:
                    problems.append(f"{name}: head {bad[0]} does not exist: the testbed's base model has heads "
                                    f"0..{n_heads - 1}")
            elif name == "upper_layers" and isinstance(value, int) and value > n_layers:
                problems.append(f"{name}: {value} is more than the base model's {n_layers} layers")
        return problems

    @staticmethod
    def layer_problems(layers: tuple[int, ...]) -> list[str]:
        """[] for distinct non-negative layer indices (at least one), else the problem, for a config's check."""
        if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
            return [f"layers {layers} must be distinct non-negative layer indices"]
        return []


def register(config_cls: type) -> Callable[[type], type]:
    """Class decorator: make a strategy available by its `name` (to the CLI, the runner and stored results).

    A strategy class with `baseline = True` is a baseline: run beside every strategy and shown apart from them.
    Refused: a name another class already holds, and a config field without a docstring (it is the help text)."""

    def wrap(cls: type) -> type:
        name = cls.name  # type: ignore[attr-defined]
        held = _REGISTRY.get(name)
        if held is not None and _origin(held[0]) != _origin(cls):
            raise StrategyError(f"strategy name {name!r} of {_origin(cls)} is taken by {_origin(held[0])}; "
                                "rename the strategy (its `name`)")
        undocumented = [f.name for f in fields(config_cls) if f.name not in field_docs(config_cls)]
        if undocumented:
            raise StrategyError(f"strategy {name!r}: config {config_cls.__qualname__} fields {undocumented} have no "
                                "docstring (a string literal under each field: it is the option's help)")
        _REGISTRY[name] = (cls, config_cls)
        cls.config_class = config_cls  # type: ignore[attr-defined]  # StrategyBase builds its default config from it
        return cls

    return wrap


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_plugins() -> None:
    """Import every module the `poser_interp.strategies` entry-point group names (once per process); a plugin that
    fails to import is refused in one line naming its package."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else ep.value
        try:
            ep.load()
        except StrategyError as e:  # a taken name or an undocumented config field: `register` says which
            raise StrategyError(f"strategy plugin {ep.name!r} (package {dist}): {e}; fix or uninstall {dist}") from e
        except Exception as e:  # any import-time failure of third-party code
            raise StrategyError(f"strategy plugin {ep.name!r} (package {dist}) failed to import: "
                                f"{type(e).__name__}: {e}; fix or uninstall {dist}") from e


def known() -> list[str]:
    """Every registered strategy and baseline, plugins included, sorted."""
    load_plugins()
    return sorted(_REGISTRY)


def baseline_names() -> tuple[str, ...]:
    """The registered baselines (`baseline = True`), in registration order: run and shown beside every strategy."""
    load_plugins()
    return tuple(n for n, (cls, _) in _REGISTRY.items() if getattr(cls, "baseline", False))


def is_baseline(name: str) -> bool:
    return name in baseline_names()


def _entry(name: str) -> tuple[type, type]:
    if name not in _REGISTRY:
        load_plugins()
    if name not in _REGISTRY:
        raise StrategyError(f"unknown strategy {name!r}; known strategies: {', '.join(known())}")
    return _REGISTRY[name]


def _check_options(name: str, options: Mapping[str, Any]) -> Any:
    cls, config_cls = _entry(name)
    names = {f.name for f in fields(config_cls)}
    bad = sorted(set(options) - names)
    if bad:
        raise StrategyError(f"strategy {name!r} has no option(s) {bad}; its options are {sorted(names)}")
    return config_cls


def has_option(name: str, option: str) -> bool:
    """Whether strategy `name`'s config has this option (e.g. 'seed': the CLI seeds every strategy that has one)."""
    return option in {f.name for f in fields(_entry(name)[1])}


def make(name: str, **options: Any) -> Any:
    """A strategy by name with exactly these config options, e.g. `make("noise", layers=(4,), scales=(1.0,))`."""
    config_cls = _check_options(name, options)
    return _entry(name)[0](config_cls(**options))


def build(name: str, n_layers: int, n_heads: int, **options: Any) -> Any:
    """A strategy by name for a model of this shape: its config's `for_model` defaults, then these options."""
    config_cls = _check_options(name, options)
    config = config_cls.for_model(n_layers, n_heads, **options)
    problems = config.shape_problems(n_layers, n_heads) if hasattr(config, "shape_problems") else []
    if problems:
        raise StrategyError(f"-o {name}.{problems[0]}")
    return _entry(name)[0](config)


def ran_as(name: str, option: str) -> Any:
    """How a stored config of strategy `name` written before `option` existed ran: the option's default, or what
    `ran_before` says (in stored JSON form); MISSING for an unknown strategy or option."""
    if name not in _REGISTRY:
        return MISSING
    config_cls = _entry(name)[1]
    for f in fields(config_cls):
        if f.name == option:
            before = getattr(config_cls, "ran_before", {}).get(option, f.default)
            return MISSING if before is MISSING else json.loads(json.dumps(before))
    return MISSING


def added_with_default(name: str, option: str, value: Any) -> bool:
    """Whether a stored config of strategy `name` without `option` ran as `value` does: it was written before the
    option existed, and ran as its default (or as `ran_before` says), so results stored then stay valid."""
    before = ran_as(name, option)
    return before is not MISSING and before == value


def option_flag(name: str, option: str, value: Any) -> str:
    """The `detect -o` flag that sets `option` of strategy `name` to a stored (JSON) value."""
    def text(v: Any) -> str:
        return "none" if v is None else v if isinstance(v, str) else json.dumps(v)
    shown = ",".join(text(v) for v in value) if isinstance(value, list | tuple) else text(value)
    return f"-o {name}.{option}={shown}"


def from_config(name: str, config: Mapping[str, Any]) -> Any:
    """Rebuild a strategy from its stored config (lists become tuples again)."""
    return make(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


def config_dict(strategy: Any) -> dict[str, Any]:
    return asdict(strategy.config)


@dataclass(frozen=True)
class Option:
    """One config field of a strategy, as the CLI and the analyses show and parse it."""

    name: str
    type: Any
    default: Any
    help: str

    def parse(self, text: str) -> Any:
        """The option's value from command-line text ('4,10' for a tuple, 'none' for None), or StrategyError."""
        try:
            return _parse(self.type, text.strip())
        except (ValueError, TypeError) as e:
            raise StrategyError(f"option {self.name}={text!r}: {e} (expected {_type_text(self.type)})") from None


def strategy_help(name: str) -> str:
    """The first line of a strategy class's docstring."""
    return (inspect.getdoc(_entry(name)[0]) or name).splitlines()[0]


def options(name: str) -> list[Option]:
    """Every config field of a strategy with its resolved type, default and docstring."""
    config_cls = _entry(name)[1]
    hints, docs = typing.get_type_hints(config_cls), field_docs(config_cls)
    return [Option(f.name, hints[f.name], f.default if f.default is not MISSING else None, docs.get(f.name, ""))
            for f in fields(config_cls)]


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring (the string literal after the field), white space folded."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out = {}
    for field, doc in zip(body, body[1:], strict=False):
        if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and isinstance(doc, ast.Expr) \
                and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
            out[field.target.id] = " ".join(doc.value.value.split())
    return out


def _parse(tp: Any, text: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if text.lower() == "none" and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(inner, text)
    if origin is tuple:
        return tuple(_parse(args[0], part.strip()) for part in text.split(",") if part.strip())
    if origin is Literal:
        if text not in args:
            raise ValueError(f"not one of {', '.join(map(repr, args))}")
        return text
    if tp is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError("not a boolean")
        return text.lower() in ("true", "1", "yes")
    if tp in (int, float, str):
        return tp(text)
    if dataclasses.is_dataclass(tp):
        raise TypeError("a nested config is set from Python, not the command line")
    raise TypeError(f"cannot parse {tp}")


def _type_text(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join("none" if a is type(None) else _type_text(a) for a in args)
    if origin is tuple:
        return f"comma-separated {_type_text(args[0])}s"
    if origin is Literal:
        return " or ".join(map(repr, args))
    return getattr(tp, "__name__", str(tp))
