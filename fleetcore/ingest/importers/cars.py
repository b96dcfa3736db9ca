"""Built-in car definitions (``--car NAME``): a DBC from comma.ai's opendbc plus a signal mapping.

The DBC files come from the installed ``opendbc`` package, found with :func:`importlib.util.find_spec`
(nothing of opendbc is imported). Files named ``*_generated`` are assembled the way opendbc's
generator does (``CM_ "IMPORT <file>";`` lines of ``dbc/generator/<brand>/<name>.dbc`` replaced by
the named files), with comments cantools cannot parse left out.

Mappings use the expression form of :mod:`fleetcore.ingest.importers.mapping`. Signs follow
openpilot (steering angle positive = left). Signals whose sign or scale we have not checked against
a reference stay extra ``x_*`` columns, in the DBC's unit.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetcore.errors import ConfigError

_IMPORT_RE = re.compile(r'CM_ "IMPORT (.*?)";\n')
# opendbc ships a few signal comments without a signal name (``CM_ SG_ 304 "...";``) that cantools rejects
_BAD_COMMENT_RE = re.compile(r'^CM_ SG_ \d+ "[^"]*";[ \t]*$', re.M)

_TOYOTA_WHEELS = "(WHEEL_SPEEDS.WHEEL_SPEED_FL + WHEEL_SPEEDS.WHEEL_SPEED_FR + WHEEL_SPEEDS.WHEEL_SPEED_RL + WHEEL_SPEEDS.WHEEL_SPEED_RR) / 4"
_HONDA_WHEELS = _TOYOTA_WHEELS


@dataclass(frozen=True)
class Car:
    name: str
    title: str
    dbc: str  # opendbc DBC name, without .dbc
    mapping: dict[str, Any]
    dongles: tuple[str, ...] = field(default=())  # comma2k19 dongle ids of this car
    bus: int = 0  # the powertrain bus (comma2k19 raw_can ``src``)


_TOYOTA_COMMON: dict[str, Any] = {
    "speed_mps": {"expr": _TOYOTA_WHEELS, "unit": "km/h"},
    "steering_angle_rad": {"expr": "STEER_ANGLE_SENSOR.STEER_ANGLE + STEER_ANGLE_SENSOR.STEER_FRACTION", "unit": "deg"},
    "x_vehicle_speed_kmh": "SPEED.SPEED",
    "x_steer_rate_degps": "STEER_ANGLE_SENSOR.STEER_RATE",
    "x_engine_rpm": "ENGINE_RPM.RPM",
    "x_yaw_rate_degps": "KINEMATICS.YAW_RATE",
    "x_brake_pressed": "BRAKE_MODULE.BRAKE_PRESSED",
}

CARS: dict[str, Car] = {
    c.name: c
    for c in (
        Car("toyota_rav4", "Toyota RAV4 2016-18 (TSS-P)", "toyota_new_mc_pt_generated",
            {**_TOYOTA_COMMON, "x_gas_pedal": "GAS_PEDAL.GAS_PEDAL"}, dongles=("b0c9d2329ad1606b",)),
        Car("toyota_prius", "Toyota Prius 2016-20 (TSS-P)", "toyota_nodsu_pt_generated",
            {**_TOYOTA_COMMON, "x_gas_pedal": "GAS_PEDAL_HYBRID.GAS_PEDAL"}),
        Car("honda_civic", "Honda Civic 2016-18 (Nidec)", "honda_civic_touring_2016_can_generated",
            {
                "speed_mps": {"expr": _HONDA_WHEELS, "unit": "km/h"},
                "steering_angle_rad": {"expr": "STEERING_SENSORS.STEER_ANGLE", "unit": "deg"},
                "x_vehicle_speed_kmh": "CAR_SPEED.CAR_SPEED",
                "x_steer_rate_degps": "STEERING_SENSORS.STEER_ANGLE_RATE",
                "x_engine_rpm": "POWERTRAIN_DATA.ENGINE_RPM",
                "x_pedal_gas": "POWERTRAIN_DATA.PEDAL_GAS",
                "x_brake_pressed": "POWERTRAIN_DATA.BRAKE_PRESSED",
            },
            dongles=("99c94dc769b5d96e",)),
    )
}


#: other spellings: the model alone, and opendbc's platform names (``TOYOTA_RAV4`` ...) lowercased
ALIASES = {"rav4": "toyota_rav4", "prius": "toyota_prius", "civic": "honda_civic"}


def get_car(name: str) -> Car:
    """A built-in car by name (case-insensitive; ``-`` or space for ``_``; ``rav4``, ``prius``, ``civic`` too)."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    car = CARS.get(ALIASES.get(key, key))
    if car is None:
        raise ConfigError("--car", f"unknown car {name!r}; expected one of {sorted(CARS)}")
    return car


def car_for_dongle(dongle: str | None) -> Car | None:
    return next((c for c in CARS.values() if dongle in c.dongles), None)


def opendbc_dir() -> Path:
    spec = importlib.util.find_spec("opendbc")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("--car", "the opendbc package is not installed (pip install opendbc); it provides the car DBC files")
    return Path(list(spec.submodule_search_locations)[0]) / "dbc"


def dbc_text(name: str) -> str:
    """The text of opendbc's DBC ``name`` (assembled for ``*_generated`` names)."""
    base = opendbc_dir()
    plain = base / f"{name}.dbc"
    if plain.is_file():
        text = plain.read_text(encoding="utf-8")
    elif name.endswith("_generated"):
        stem = name[: -len("_generated")]
        found = sorted((base / "generator").glob(f"*/{stem}.dbc"))
        if not found:
            raise ConfigError("--car", f"opendbc has no DBC {name!r} (looked for {plain} and generator/*/{stem}.dbc)")
        src = found[0]
        core = src.read_text(encoding="utf-8")
        parts = [(src.parent / inc).read_text(encoding="utf-8") for inc in _IMPORT_RE.findall(core)]
        parts.append(_IMPORT_RE.sub("", core))
        text = "\n".join(parts)
    else:
        raise ConfigError("--car", f"opendbc has no DBC {name!r} ({plain} not found)")
    return _BAD_COMMENT_RE.sub("", text)


def load_car_dbc(car: Car) -> Any:
    import cantools

    return cantools.database.load_string(dbc_text(car.dbc), "dbc", strict=False)


@contextmanager
def car_dbc_file(car: Car) -> Iterator[Path]:
    """The car's DBC as a temporary file (for readers that want a path, e.g. asammdf)."""
    with tempfile.TemporaryDirectory(prefix="fleet-dbc-") as d:
        p = Path(d) / f"{car.dbc}.dbc"
        p.write_text(dbc_text(car.dbc), encoding="utf-8")
        yield p
