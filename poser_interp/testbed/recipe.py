"""Recipes as files: a `TestbedConfig` from a TOML recipe or a testbed's manifest, checked key by key.

A TOML recipe mirrors `TestbedConfig`: top-level keys are its fields, the nested configs are tables (`[recipe]`
the `LoraRecipe`, `[base]` the `ModelSpec`, `[ladder]` the `curriculum.Ladder`, `[thresholds]` the `Thresholds`).
Every key it leaves out keeps the dataclass default (`TestbedConfig()`, the default testbed's recipe); a table sets
fields over the default of its field. TOML has no null: the string "none" sets a field that may be None to None
(`ladder = "none"`, `target_margin = "none"`).

A JSON file is a testbed's `manifest.json` (its "config") or a config itself (`testbed build --dry-run` prints one):
keys it lacks mean what they meant when it was written (`TestbedConfig.from_dict`), so a manifest rebuilds its
testbed. Overrides (`--set recipe.max_steps=50`) apply last, one dotted key each.

Unknown keys are refused naming the nearest valid one, wrong types naming the expected type; nothing is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ..errors import DataError
from .build import TestbedConfig, absent_defaults

NONE = "none"
"""How a recipe file or `--set` writes None (TOML has no null)."""


def load_recipe(path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()) -> TestbedConfig:
    """The config of a recipe file (TOML, or a manifest / config JSON; None: the defaults) with `overrides` applied:
    'KEY=VALUE' strings (VALUE in TOML syntax, or bare text; 'a,b' for a list) or a {dotted key: value} mapping.
    DataError naming the file and key on an unknown key, a wrong type or a config the dataclasses refuse."""
    where = str(path) if path is not None else "the defaults"
    if path is None:
        values: dict[str, Any] = {}
        base = TestbedConfig().to_dict()
    else:
        values, base = _read(Path(path))
    merged = _merge(base, _check(values, TestbedConfig, "", where), "")
    for key, value in _override_items(overrides):
        merged = _set(merged, key, value, where="--set")
    return make_config(merged, where)


def make_config(d: Mapping[str, Any], where: str = "recipe") -> TestbedConfig:
    """A TestbedConfig from a complete, checked config dict; the dataclasses' own checks become a DataError."""
    try:
        return TestbedConfig.from_dict(json.loads(json.dumps(d)))
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: {e}") from None


def recipe_fields(cls: type = TestbedConfig, prefix: str = "") -> Iterator[tuple[str, Any, Any, type]]:
    """(dotted key, type, default, owning class) of every recipe field, nested tables expanded (for help)."""
    hints = typing.get_type_hints(cls)
    defaults = TestbedConfig().to_dict()
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        key, tp = prefix + f.name, hints[f.name]
        inner = _dataclass_of(tp)
        if inner is not None:
            yield from recipe_fields(inner, key + ".")
        else:
            yield key, tp, _lookup(defaults, key), cls


def type_text(tp: Any) -> str:
    """A field type as a recipe writes it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [type_text(a) for a in args if a is not type(None)]
        return " | ".join(inner) + (f' | "{NONE}"' if type(None) in args else "")
    if origin is tuple:  # no square brackets: error lines go through rich markup
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_text(args[0])}s"
        if len(set(args)) == 1:
            return f"list of {len(args)} {type_text(args[0])}s"
        return f"list of {len(args)}: " + ", ".join(type_text(a) for a in args)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return f"table ({getattr(tp, '__name__', tp)})"
    return {int: "integer", float: "number", str: "string", bool: "true | false"}.get(tp, str(tp))


def to_toml(config: TestbedConfig) -> str:
    """`config` as a complete TOML recipe (every field, nested configs as tables; None written "none")."""
    top, tables = [], []
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            tables.append(f"\n[{key}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in value.items()))
        else:
            top.append(f"{key} = {_toml_value(value)}\n")
    return "".join(top) + "".join(tables)


def _toml_value(value: Any) -> str:
    if value is None:
        return json.dumps(NONE)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


# --- reading ------------------------------------------------------------------------------------------------------
def _read(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the file's values, the config they apply over)."""
    if not path.is_file():
        raise DataError(f"recipe {path} not found (a .toml recipe, e.g. recipes/v2d.toml, or a testbed's "
                        "manifest.json)")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            data = data["config"]  # a testbed manifest
        if not isinstance(data, dict):
            raise DataError(f"{path}: a JSON recipe is a testbed manifest or a config object")
        return data, absent_defaults()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"{path}: not valid TOML ({e})") from None
    return data, TestbedConfig().to_dict()


def _override_items(overrides: Sequence[str] | Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    if isinstance(overrides, Mapping):
        yield from overrides.items()
        return
    for item in overrides:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise DataError(f"--set {item!r}: write KEY=VALUE, e.g. --set recipe.max_steps=50")
        yield key.strip(), _text_value(text.strip())


def _text_value(text: str) -> Any:
    """A --set value: TOML syntax where it parses (50, 1e-3, true, [1, 2], "x"), else the bare text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# --- checking -----------------------------------------------------------------------------------------------------
def _dataclass_of(tp: Any) -> type | None:
    """The dataclass a field holds (also through `X | None`), else None."""
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]  # type: ignore[return-value]
    return None


def _all_keys(cls: type = TestbedConfig, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        inner = _dataclass_of(hints[f.name])
        if inner is not None:
            keys += _all_keys(inner, prefix + f.name + ".")
    return keys


def _unknown(key: str, where: str) -> DataError:
    table = key.rpartition(".")[0]  # the nearest key of the same table where that table has keys
    keys = [k for k in _all_keys() if k.rpartition(".")[0] == table] or _all_keys()
    nearest = difflib.get_close_matches(key, keys, n=1, cutoff=0.0)
    return DataError(f"{where}: unknown recipe key {key!r}; the nearest valid key is {nearest[0]!r} "
                     "(`poser-interp testbed recipe-help` lists them)")


def _check(values: Mapping[str, Any], cls: type, prefix: str, where: str) -> dict[str, Any]:
    """`values` (a table for dataclass `cls`) with every key known and every value of its field's type."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for name, value in values.items():
        key = prefix + name
        if name not in names:
            raise _unknown(key, where)
        out[name] = _value(hints[name], value, key, where)
    return out


def _value(tp: Any, value: Any, key: str, where: str) -> Any:
    """`value` checked against field type `tp` (JSON-ready: tuples as lists, tables as checked dicts)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def wrong() -> DataError:
        return DataError(f"{where}: {key} = {value!r} has the wrong type; expected {type_text(tp)}")

    if origin in (types.UnionType, typing.Union):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() == NONE)):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return _value(inner, value, key, where)
        except DataError as e:
            if str(e).startswith(f"{where}: {key} = "):  # this field's own type, not a key inside its table
                raise wrong() from None
            raise
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise wrong()
        return _check(value, tp, key + ".", where)  # type: ignore[arg-type]
    if origin is tuple:
        if isinstance(value, str):  # --set splits=0,1,2
            value = [_text_value(part.strip()) for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise wrong()
        if len(args) == 2 and args[1] is Ellipsis:
            return [_value(args[0], v, f"{key} item {i + 1}", where) for i, v in enumerate(value)]
        if len(value) != len(args):
            raise wrong()
        return [_value(a, v, f"{key} item {i + 1}", where) for i, (a, v) in enumerate(zip(args, value, strict=True))]
    if origin is Literal:
        if value not in args:
            raise DataError(f"{where}: {key} = {value!r}: choose one of {', '.join(map(repr, args))}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong()
        return value
    raise DataError(f"{where}: {key}: fields of type {tp} cannot be set from a recipe")


def _merge(base: Mapping[str, Any], values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """`base` (a config dict) with the checked `values` set over it; a table sets fields over its field's value
    (over the class defaults where that value is None: a ladder where the defaults have none)."""
    out = dict(base)
    for name, value in values.items():
        if isinstance(value, dict):
            current = out.get(name)
            if current is None:
                current = _class_defaults(prefix + name)
            out[name] = _merge(current, value, prefix + name + ".")
        else:
            out[name] = value
    return out


def _class_defaults(key: str) -> dict[str, Any]:
    cls: Any = TestbedConfig
    for part in key.split("."):
        cls = _dataclass_of(typing.get_type_hints(cls)[part])
    return dataclasses.asdict(cls())


def _set(config: dict[str, Any], key: str, value: Any, where: str) -> dict[str, Any]:
    """`config` with the dotted `key` set to `value` (checked)."""
    parts = key.split(".")
    cls: Any = TestbedConfig
    for part in parts[:-1]:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        inner = _dataclass_of(hints[part]) if part in hints else None
        if inner is None:
            raise _unknown(key, where)
        cls = inner
    hints = typing.get_type_hints(cls)
    if parts[-1] not in hints:
        raise _unknown(key, where)
    nested: Any = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return _merge(config, _check(nested, TestbedConfig, "", where), "")


def _lookup(d: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(d, Mapping):
            return None
        d = d.get(part)  # type: ignore[assignment]
    return d
