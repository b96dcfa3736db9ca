"""Config faults: trigger files, dataset specs and run options a user writes. Each bad file must give
the project's typed error (a FleetError) in one line naming the file, never a traceback of another type."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetcore.clips import CurateConfig
from fleetcore.datasets.spec import load_spec
from fleetcore.errors import FleetError
from fleetcore.triggers.library import load_trigger_file

GOOD_TRIGGER = """name: hard_brake
version: 1
where: "accel_lon < -3.5"
min_duration_s: 0.3
"""

GOOD_SPEC = """name: braking
where: "primary_trigger = 'hard_brake'"
cameras: [front]
frames_per_clip: 8
frame_rate_hz: 4.0
resolution: [320, 180]
"""

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

#: (fault, file name, text, the loader, what the one-line error must name)
CONFIG_FAULTS = [
    ("trigger_not_yaml", "t.yaml", "name: [unclosed", "trigger", "not valid YAML"),
    ("trigger_empty_file", "t.yaml", "", "trigger", "t.yaml"),
    ("trigger_a_list", "t.yaml", "- 1\n- 2\n", "trigger", "t.yaml"),
    ("trigger_unknown_field", "t.yaml", GOOD_TRIGGER + "colour: red\n", "trigger", "colour"),
    ("trigger_missing_where", "t.yaml", GOOD_TRIGGER.replace('where: "accel_lon < -3.5"\n', ""), "trigger", "where"),
    ("trigger_bad_name", "t.yaml", GOOD_TRIGGER.replace("hard_brake", "Hard Brake!"), "trigger", "name"),
    ("trigger_version_zero", "t.yaml", GOOD_TRIGGER.replace("version: 1", "version: 0"), "trigger", "version"),
    ("trigger_negative_duration", "t.yaml", GOOD_TRIGGER.replace("0.3", "-1"), "trigger", "min_duration_s"),
    ("trigger_duration_text", "t.yaml", GOOD_TRIGGER.replace("0.3", "soon"), "trigger", "min_duration_s"),
    ("trigger_unknown_column", "t.yaml", GOOD_TRIGGER.replace("accel_lon", "warp_factor"), "trigger", "where"),
    ("trigger_sql_injection", "t.yaml", GOOD_TRIGGER.replace('"accel_lon < -3.5"', '"1=1; DROP TABLE clips"'), "trigger", "where"),
    ("trigger_where_subquery", "t.yaml", GOOD_TRIGGER.replace('"accel_lon < -3.5"', '"accel_lon < (SELECT 1)"'), "trigger", "where"),
    ("trigger_where_not_string", "t.yaml", GOOD_TRIGGER.replace('"accel_lon < -3.5"', "[1, 2]"), "trigger", "where"),
    ("trigger_bad_peak_mode", "t.yaml", GOOD_TRIGGER + "peak_mode: loudest\n", "trigger", "peak_mode"),
    ("trigger_yaml_bomb", "t.yaml", BILLION_LAUGHS, "trigger", "t.yaml"),
    ("trigger_binary_file", "t.yaml", "\udcff\udcfe", "trigger", "t.yaml"),
    ("spec_not_yaml", "s.yaml", "name: {", "spec", "not valid YAML"),
    ("spec_unknown_field", "s.yaml", GOOD_SPEC + "colour: red\n", "spec", "colour"),
    ("spec_where_and_sql", "s.yaml", GOOD_SPEC + 'sql: "SELECT * FROM clips"\n', "spec", "sql"),
    ("spec_sql_not_select", "s.yaml", GOOD_SPEC.replace("where:", "sql:").replace('"primary_trigger = \'hard_brake\'"', '"DELETE FROM clips"'), "spec", "sql"),
    ("spec_zero_frames", "s.yaml", GOOD_SPEC.replace("frames_per_clip: 8", "frames_per_clip: 0"), "spec", "frames_per_clip"),
    ("spec_bad_rate", "s.yaml", GOOD_SPEC.replace("4.0", "-4"), "spec", "frame_rate_hz"),
    ("spec_bad_name", "s.yaml", GOOD_SPEC.replace("braking", "../../etc"), "spec", "name"),
    ("spec_cameras_text", "s.yaml", GOOD_SPEC.replace("[front]", "7"), "spec", "cameras"),
    ("spec_resolution_odd", "s.yaml", GOOD_SPEC.replace("[320, 180]", "[320]"), "spec", "resolution"),
]


def _load(kind: str, path: Path):
    return load_trigger_file(path) if kind == "trigger" else load_spec(path)


@pytest.mark.parametrize("name, fname, text, kind, names", CONFIG_FAULTS, ids=[f[0] for f in CONFIG_FAULTS])
def test_config_fault_gives_one_typed_line(tmp_path, ledger, name, fname, text, kind, names):
    p = tmp_path / fname
    p.write_bytes(text.encode("utf-8", "surrogateescape"))
    try:
        _load(kind, p)
    except FleetError as exc:
        msg = str(exc)
        ok = "\n" not in msg and str(p) in msg and names in msg
        ledger.record(f"config/{name}", "handled" if ok else "wrong")
        assert ok, msg
    except Exception as exc:  # noqa: BLE001 - the suite's point: anything untyped is a finding
        ledger.record(f"config/{name}", "traceback")
        raise AssertionError(f"untyped {type(exc).__name__}: {exc}") from exc
    else:
        ledger.record(f"config/{name}", "wrong")
        pytest.fail("accepted a bad file")


RUN_OPTION_FAULTS = [
    ("run_rate_zero", {"rate_hz": 0.0}, "rate_hz"),
    ("run_rate_huge", {"rate_hz": 1e9}, "rate_hz"),
    ("run_max_side_negative", {"max_side": -5}, "max_side"),
    ("run_jpeg_quality_200", {"jpeg_quality": 200}, "jpeg_quality"),
    ("run_unknown_stage", {"stages": ("labels", "teleport")}, "stages"),
    ("run_shard_bytes_tiny", {"shard_bytes": 0}, "shard_bytes"),
    ("run_missing_trigger_file", {"trigger_paths": ("/nonexistent/triggers.yaml",)}, "triggers.yaml"),
]


@pytest.mark.parametrize("name, kw, names", RUN_OPTION_FAULTS, ids=[f[0] for f in RUN_OPTION_FAULTS])
def test_run_option_fault_gives_one_typed_line(ledger, name, kw, names):
    try:
        CurateConfig(**kw)
    except FleetError as exc:
        ok = "\n" not in str(exc) and names in str(exc)
        ledger.record(f"config/{name}", "handled" if ok else "wrong")
        assert ok, str(exc)
    except Exception as exc:  # noqa: BLE001 - anything untyped is a finding
        ledger.record(f"config/{name}", "traceback")
        raise AssertionError(f"untyped {type(exc).__name__}: {exc}") from exc
    else:
        ledger.record(f"config/{name}", "wrong")
        pytest.fail("accepted a bad option")
