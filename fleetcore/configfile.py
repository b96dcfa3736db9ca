"""Reading user config files (trigger files, dataset specs, labels and privacy configs) with one
error shape: a :class:`~fleetcore.errors.ConfigError` naming the file and what is wrong."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from fleetcore.errors import ConfigError


def read_config_file(path: str | Path, *, what: str) -> Any:
    """The parsed document of a YAML file (JSON when the name ends in ``.json``).

    ``what`` names the file's role in the error message (``"trigger file"``, ``"labels config"``...).
    An unreadable file gives ``<path>: cannot read <what>: <reason>``; a malformed one
    ``<path>: not valid YAML: ...`` (or JSON)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), f"cannot read {what}: {getattr(exc, 'strerror', None) or exc}") from exc
    if p.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(str(p), f"not valid JSON: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), f"not valid YAML: {_yaml_problem(exc)}") from exc


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's multi-line message as one line: what is wrong and where (line, column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


# Field checks of the typed configs (CurateConfig, the stage options), for their ``__post_init__``:
# each raises ConfigError(where, problem, field=...) and stores the value normalised (lists as tuples,
# numbers as floats), so a config compares and hashes the same however it was given.
def check_names(obj: Any, name: str, where: str, *, allow_none: bool = False) -> None:
    """``obj.<name>``: a list of str (``os.PathLike`` taken as its path), stored as a tuple."""
    v = getattr(obj, name)
    if v is None and allow_none:
        return
    items = tuple(os.fspath(x) if isinstance(x, os.PathLike) else x for x in v) if isinstance(v, (list, tuple)) else None
    if items is None or not all(isinstance(x, str) for x in items):
        raise ConfigError(where, f"expected a list of names, got {v!r}", field=name)
    object.__setattr__(obj, name, items)


def check_int(obj: Any, name: str, where: str, *, minimum: int, maximum: int | None = None, allow_none: bool = False) -> None:
    v = getattr(obj, name)
    if v is None and allow_none:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum or (maximum is not None and v > maximum):
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(where, f"expected an integer {bound}, got {v!r}", field=name)


def check_number(obj: Any, name: str, where: str, *, minimum: float, strict: bool = False, maximum: float | None = None) -> None:
    """``obj.<name>``: a finite number >= ``minimum`` (> with ``strict``) and <= ``maximum``, stored as a float."""
    v = getattr(obj, name)
    if (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < minimum or (strict and v == minimum)
            or (maximum is not None and v > maximum)):
        bound = f"{'>' if strict else '>='} {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")
        raise ConfigError(where, f"expected a number {bound}, got {v!r}", field=name)
    object.__setattr__(obj, name, float(v))


def check_flag(obj: Any, name: str, where: str) -> None:
    v = getattr(obj, name)
    if not isinstance(v, bool):
        raise ConfigError(where, f"expected true or false, got {v!r}", field=name)


def config_mapping(doc: Any, where: str, allowed: set[str], expected: str) -> Mapping[str, Any]:
    """A config file's document as a mapping with only ``allowed`` keys (an empty file: {})."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(where, f"expected a mapping with {expected}")
    for k in doc:
        if k not in allowed:
            raise ConfigError(where, f"unknown key (expected one of {sorted(allowed)})", field=str(k))
    return doc
