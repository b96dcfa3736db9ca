"""Signal mappings of the CAN importers: canonical (or extra ``x_*``) column → expression over DBC signals.

A mapping document is ``{column: spec}`` where spec is

* a string: an expression, e.g. ``"gnss_speed.Speed"`` or
  ``"(WHEEL_SPEEDS.WHEEL_SPEED_FL + WHEEL_SPEEDS.WHEEL_SPEED_FR) / 2"``;
* ``{signal: "Message.Signal", scale: 1.0, offset: 0.0}`` (the original form), or
* ``{expr: "...", unit: "km/h", scale: 1.0, offset: 0.0}``.

``column = unit_conversion(expr * scale + offset)``. Expressions are parsed with :mod:`ast` and may
use only numbers, ``+ - * /``, unary minus, parentheses and signal names: ``Message.Signal``, or a
bare ``Signal`` when exactly one DBC message has a signal of that name. Signals of several messages
are evaluated at the samples of the first signal named, the others interpolated linearly.

Bad mapping documents raise :class:`fleetcore.errors.SourceImportError` (wrong shape, unknown column,
signal not in the DBC) or :class:`fleetcore.errors.ConfigError` (a bad expression or unit), naming the
mapping file and the column.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fleetcore.configfile import read_config_file
from fleetcore.errors import ConfigError, SourceImportError
from fleetcore.ingest.importers.common import SIGNALS, Series, resample
from schemas import TELEMETRY

DEG = math.pi / 180.0
#: unit → (dimension, factor to the dimension's SI unit)
UNITS: dict[str, tuple[str, float]] = {
    "m/s": ("speed", 1.0), "km/h": ("speed", 1 / 3.6), "kph": ("speed", 1 / 3.6), "mph": ("speed", 0.44704),
    "kn": ("speed", 1852 / 3600), "knots": ("speed", 1852 / 3600),
    "m/s^2": ("accel", 1.0), "m/s2": ("accel", 1.0), "g": ("accel", 9.80665),
    "rad/s": ("angular_rate", 1.0), "deg/s": ("angular_rate", DEG),
    "rad": ("angle", 1.0), "deg": ("angle", DEG),
    "fraction": ("fraction", 1.0), "1": ("fraction", 1.0), "%": ("fraction", 0.01),
}
#: canonical column → its unit (columns not listed take no unit)
CANONICAL_UNITS: dict[str, str] = {
    "speed_mps": "m/s", "accel_lon_mps2": "m/s^2", "accel_lat_mps2": "m/s^2", "yaw_rate_radps": "rad/s",
    "steering_angle_rad": "rad", "shadow_steering_angle_rad": "rad", "heading_rad": "rad",
    "brake": "fraction", "throttle": "fraction", "lat_deg": "deg", "lon_deg": "deg",
}


def unit_factor(column: str, unit: str | None, *, path: str) -> float:
    """Factor turning a value in ``unit`` into ``column``'s canonical unit (1 for no unit / extras)."""
    if unit is None:
        return 1.0
    if unit not in UNITS:
        raise ConfigError(path, f"unknown unit {unit!r}; expected one of {sorted(UNITS)}", field=f"{column}.unit")
    if TELEMETRY.is_extra(column):
        return 1.0  # extra columns keep the source unit
    want = CANONICAL_UNITS.get(column)
    if want is None:
        raise ConfigError(path, f"{column} takes no unit (found {unit!r})", field=f"{column}.unit")
    dim, f = UNITS[unit]
    wdim, wf = UNITS[want]
    if dim != wdim:
        raise ConfigError(path, f"unit {unit!r} is a {dim}, but {column} is in {want}", field=f"{column}.unit")
    return f / wf


# --------------------------------------------------------------------------------------
# Expressions
# --------------------------------------------------------------------------------------
_OPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}


def _check_expr(node: ast.AST, refs: list[tuple[str | None, str]], *, path: str, key: str, text: str) -> None:
    if isinstance(node, ast.Expression):
        _check_expr(node.body, refs, path=path, key=key, text=text)
    elif isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        _check_expr(node.left, refs, path=path, key=key, text=text)
        _check_expr(node.right, refs, path=path, key=key, text=text)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        _check_expr(node.operand, refs, path=path, key=key, text=text)
    elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        if not math.isfinite(node.value):
            raise ConfigError(path, f"expression {text!r}: numbers must be finite", field=key)
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        refs.append((node.value.id, node.attr))
    elif isinstance(node, ast.Name):
        refs.append((None, node.id))
    else:
        what = type(getattr(node, "op", node)).__name__
        raise ConfigError(
            path, f"expression {text!r}: {what} is not allowed; use numbers, + - * /, parentheses and Message.Signal names", field=key
        )


@dataclass(frozen=True)
class ColumnMap:
    """One mapped column: ``column = (expr * scale + offset) * factor``."""

    column: str
    text: str  # the expression as written
    tree: ast.Expression
    refs: tuple[tuple[str | None, str], ...]  # (message or None, signal) as written
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    factor: float = 1.0
    resolved: dict[tuple[str | None, str], str] = field(default_factory=dict, compare=False)  # ref → "Msg.Sig"

    @property
    def ref(self) -> str:
        """The expression (for messages)."""
        return self.text

    @property
    def signals(self) -> list[str]:
        """Resolved ``Message.Signal`` names, in the order first named."""
        out: list[str] = []
        for r in self.refs:
            s = self.resolved.get(r, f"{r[0]}.{r[1]}" if r[0] else r[1])
            if s not in out:
                out.append(s)
        return out


def parse_expression(text: str, *, path: str, key: str) -> tuple[ast.Expression, tuple[tuple[str | None, str], ...]]:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(path, f"expression {text!r} does not parse: {exc.msg}", field=key) from exc
    refs: list[tuple[str | None, str]] = []
    _check_expr(tree, refs, path=path, key=key, text=text)
    if not refs:
        raise ConfigError(path, f"expression {text!r} names no signal", field=key)
    return tree, tuple(refs)


_EXTRA_HINT = f"extra columns are named {TELEMETRY.extra_prefix}<name> (lowercase letters, digits, _)"


def parse_mapping(raw: Any, path: str, *, require_speed: bool = True) -> list[ColumnMap]:
    """Validate a mapping document (see the module docstring)."""
    if not isinstance(raw, dict) or not raw:
        raise SourceImportError(path, "expected a YAML mapping of telemetry columns to {signal: 'Message.Signal', scale, offset} or expressions")
    out = []
    for col in sorted(raw, key=str):
        spec = raw[col]
        if not isinstance(col, str) or (col not in SIGNALS and not TELEMETRY.is_extra(col)):
            raise SourceImportError(path, f"{col!r} is not a canonical telemetry column; expected one of {SIGNALS} ({_EXTRA_HINT})")
        if isinstance(spec, str):
            spec = {"expr": spec}
        if not isinstance(spec, dict) or not (isinstance(spec.get("signal"), str) or isinstance(spec.get("expr"), str)):
            raise SourceImportError(path, f"{col}: expected an expression, {{signal: 'Message.Signal', scale, offset}} or {{expr: ..., unit: ...}}")
        unknown = set(spec) - {"signal", "expr", "scale", "offset", "unit"}
        if unknown:
            raise SourceImportError(path, f"{col}: unknown keys {sorted(unknown)}; expected signal or expr, scale, offset, unit")
        if "signal" in spec and "expr" in spec:
            raise SourceImportError(path, f"{col}: give either signal or expr, not both")
        if "signal" in spec:
            ref = spec["signal"]
            if ref.count(".") != 1 or not all(ref.split(".")):
                raise SourceImportError(path, f"{col}: signal {ref!r} is not of the form 'Message.Signal'")
            msg, sig = ref.split(".")
            text, tree, refs = ref, ast.Expression(body=ast.Attribute(value=ast.Name(id=msg), attr=sig)), ((msg, sig),)
        else:
            text = spec["expr"]
            tree, refs = parse_expression(text, path=path, key=col)
        scale, offset = spec.get("scale", 1.0), spec.get("offset", 0.0)
        for what, v in (("scale", scale), ("offset", offset)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SourceImportError(path, f"{col}: {what} must be a finite number, found {v!r}")
        unit = spec.get("unit")
        if unit is not None and not isinstance(unit, str):
            raise ConfigError(path, f"unit must be a string, found {unit!r}", field=f"{col}.unit")
        factor = unit_factor(col, unit, path=path)
        out.append(ColumnMap(col, text, tree, refs, float(scale), float(offset), unit, factor))
    if require_speed and not any(m.column == "speed_mps" for m in out):
        raise SourceImportError(path, "the mapping has no speed_mps entry; speed is required")
    return out


def load_mapping(path: Path) -> list[ColumnMap]:
    return parse_mapping(read_config_file(path, what="CAN mapping file"), str(path))


def resolve_against_dbc(mapping: Sequence[ColumnMap], db: Any, dbc_path: str, mapping_path: str) -> dict[str, set[str]]:
    """Resolve every signal name of the mapping in the DBC (bare names must be unique there).
    Fills each ColumnMap's ``resolved``; returns message name → signal names needed."""
    frames: dict[str, list[Any]] = {}
    by_signal: dict[str, set[str]] = {}
    for m in db.messages:
        frames.setdefault(m.name, []).append(m)
        for s in m.signals:
            by_signal.setdefault(s.name, set()).add(m.name)
    need: dict[str, set[str]] = {}
    for cm in mapping:
        for r in cm.refs:
            msg, sig = r
            if msg is None:
                owners = sorted(by_signal.get(sig, ()))
                if len(owners) != 1:
                    problem = "is in no message of" if not owners else f"is in several messages ({', '.join(owners)}) of"
                    raise SourceImportError(mapping_path, f"{cm.column}: signal {sig!r} {problem} the DBC {dbc_path}; write Message.Signal")
                msg = owners[0]
            msgs = frames.get(msg)
            if not msgs:
                raise SourceImportError(mapping_path, f"{cm.column}: message {msg!r} is not in the DBC {dbc_path}")
            names = {s.name for m in msgs for s in m.signals}
            if sig not in names:
                raise SourceImportError(mapping_path, f"{cm.column}: signal {msg + '.' + sig!r} is not in the DBC {dbc_path} (message {msg} has {sorted(names)})")
            cm.resolved[r] = f"{msg}.{sig}"
            need.setdefault(msg, set()).add(sig)
    return need


def _eval(node: ast.AST, env: Mapping[tuple[str | None, str], np.ndarray]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.BinOp):
        return _OPS[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Attribute):
        return env[(node.value.id, node.attr)]  # type: ignore[attr-defined]
    if isinstance(node, ast.Name):
        return env[(None, node.id)]
    raise TypeError(type(node).__name__)  # unreachable: checked at parse time


def evaluate(cm: ColumnMap, signals: Mapping[str, Series]) -> Series:
    """The column's series from decoded signals (``"Msg.Sig"`` → physical values): evaluated at the
    samples of the first signal named, the others interpolated (linear, NaN across long gaps)."""
    names = cm.signals
    base = signals.get(names[0])
    if base is None or len(base) == 0:
        return Series.make(np.zeros(0, np.int64), np.zeros(0))
    env: dict[tuple[str | None, str], np.ndarray] = {}
    for r in cm.refs:
        name = cm.resolved.get(r, f"{r[0]}.{r[1]}")
        s = signals.get(name)
        if s is None or len(s) == 0:
            return Series.make(np.zeros(0, np.int64), np.zeros(0))
        env[r] = s.values if s is base or np.array_equal(s.t_ns, base.t_ns) else resample(s, base.t_ns)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = np.broadcast_to(np.asarray(_eval(cm.tree, env), dtype=np.float64), base.t_ns.shape)
        v = (v * cm.scale + cm.offset) * cm.factor
    return Series.make(base.t_ns, v)

