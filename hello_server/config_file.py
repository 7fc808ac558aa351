"""hello-server's configuration file (TOML) and ``--print-config``.

The file holds the same settings as the command line, keyed by the option's
long name without the dashes (``history-size = 100``; ``history_size`` is
read the same). It becomes click's ``default_map``, so the command line wins
over the environment, which wins over the file, which wins over the defaults,
with no list of keys kept here: every option is a key, and a key that is no
option is an error naming it.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperOption

__all__ = ["ConfigFileError", "dump", "load", "option_keys"]

# Options that are about the command itself, not settings.
_NOT_SETTINGS = frozenset({"config", "print-config", "version", "help"})
# Settings whose value --print-config never shows.
SECRET_KEYS = frozenset({"auth-jwt-secret"})
_MASK = "********"


class ConfigFileError(ValueError):
    """The file cannot be read, is not TOML, or has a key that is no setting."""


def option_keys(params: Iterable[object]) -> dict[str, str]:
    """Each setting's file key (``history-size``) and the parameter it sets (``history_size``)."""
    keys: dict[str, str] = {}
    for param in params:
        if not isinstance(param, TyperOption) or param.name is None:
            continue
        longs = [opt[2:] for opt in param.opts if opt.startswith("--")]
        if longs and longs[0] not in _NOT_SETTINGS:
            keys[longs[0]] = param.name
    return keys


def load(path: Path, keys: Mapping[str, str]) -> dict[str, Any]:
    """The file's settings as a click ``default_map`` (parameter name to value)."""
    try:
        with path.open("rb") as file:
            table = tomllib.load(file)
    except OSError as error:
        raise ConfigFileError(f"cannot read {path} ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigFileError(f"{path} is not valid TOML: {error}") from None
    defaults: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("_", "-")
        name = keys.get(key)
        if name is None:
            raise ConfigFileError(
                f"{path}: unknown setting {raw_key!r} (settings are the long option names "
                "without '--', e.g. port = 9000; see hello-server --help)"
            )
        if isinstance(value, dict | list):
            raise ConfigFileError(f"{path}: {raw_key} must be a single value, not a table or list")
        if name in defaults:
            raise ConfigFileError(f"{path}: {key} is set twice (with '-' and with '_')")
        defaults[name] = value
    return defaults


def dump(ctx: typer.Context, keys: Mapping[str, str]) -> str:
    """The effective settings as TOML, each with where it came from; secrets masked."""
    lines = ["# hello-server: effective configuration (command line > environment > file)"]
    for key, name in keys.items():
        value = ctx.params.get(name)
        source = ctx.get_parameter_source(name)
        origin = _ORIGINS.get(source.name, "") if source is not None else ""
        if value is None:
            lines.append(f"# {key} is not set")
            continue
        shown = _MASK if key in SECRET_KEYS else value
        lines.append(f"{key} = {_toml(shown)}{origin}")
    return "\n".join(lines)


# click's ParameterSource names (typer vendors click: the enum is not public).
_ORIGINS = {
    "COMMANDLINE": "  # command line",
    "ENVIRONMENT": "  # environment",
    "DEFAULT_MAP": "  # config file",
}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, Iterable) and not isinstance(value, str | Path):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    # A JSON string is a TOML basic string: the same escapes.
    return json.dumps(str(value), ensure_ascii=False)
