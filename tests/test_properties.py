"""Property-based tests (hypothesis) of the parsers a user feeds: drive manifests, telemetry files
(CSV, NMEA, GPX), trigger and dataset YAML, SQL. The property: whatever the input, the parser
returns a valid object or raises a FleetError whose message is one line — never another exception
(a traceback), never a hang.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fleetcore.errors import FleetError  # noqa: E402
from schemas import SchemaValidationError  # noqa: E402

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# JSON-like values, biased towards the shapes the parsers expect
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.sampled_from(["front", "h264", "csv", "parquet", "cameras/front/000.mp4", "../x", "/etc/passwd"]))
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=10), kids, max_size=5)),
                           max_leaves=25)


def one_line(exc: BaseException) -> None:
    assert isinstance(exc, (FleetError, SchemaValidationError)), f"{type(exc).__name__}: {exc}"
    assert "\n" not in str(exc), str(exc)


MANIFEST_KEYS = ["format_version", "vehicle_id", "drive_id", "utc_offset_ns", "cameras", "telemetry", "source"]


def manifest_like():
    camera = st.fixed_dictionaries({"name": st.one_of(st.sampled_from(["front", "left", "Front!", ""]), scalars),
                                    "codec": st.one_of(st.sampled_from(["h264", "hevc"]), scalars),
                                    "files": st.one_of(st.lists(st.fixed_dictionaries({
                                        "path": st.one_of(st.sampled_from(["cameras/front/000.mp4", "../../x.mp4", "/abs.mp4"]), scalars),
                                        "start_ns": st.one_of(st.integers(-2**63, 2**63 - 1), scalars),
                                        "frame_times": st.one_of(st.none(), st.text(max_size=5), scalars)}), max_size=2), scalars)})
    base = st.fixed_dictionaries({
        "format_version": st.one_of(st.just(1), scalars),
        "vehicle_id": st.one_of(st.sampled_from(["veh-1", "a b", "", "x" * 300]), scalars),
        "drive_id": st.one_of(st.sampled_from(["d-1", "../d", "d/e"]), scalars),
        "utc_offset_ns": st.one_of(st.integers(-2**63, 2**63 - 1), scalars),
        "cameras": st.one_of(st.lists(camera, max_size=3), scalars),
        "telemetry": st.one_of(st.none(), st.fixed_dictionaries({"path": st.one_of(st.just("telemetry.parquet"), scalars),
                                                                 "format": st.one_of(st.sampled_from(["parquet", "csv", "xml"]), scalars)}), scalars),
        "source": st.one_of(st.just("test"), scalars),
    })
    return st.one_of(base, base.flatmap(lambda d: st.sets(st.sampled_from(MANIFEST_KEYS)).map(lambda drop: {k: v for k, v in d.items() if k not in drop})),
                     json_values)


@SETTINGS
@given(manifest_like())
def test_manifest_validation_never_tracebacks(raw):
    from fleetcore.landing.drives import validate_manifest

    try:
        m = validate_manifest(raw)
    except Exception as exc:  # noqa: BLE001 - the property under test
        one_line(exc)
        assert getattr(exc, "code", None) == "manifest_invalid"
    else:
        assert isinstance(m, dict)  # a drive with neither cameras nor telemetry is refused by validate_drive (drive_empty)


@SETTINGS
@given(st.text(max_size=400))
def test_manifest_file_text_never_tracebacks(tmp_path_factory, text):
    from fleetcore.landing.drives import read_manifest

    d = tmp_path_factory.mktemp("m")
    (d / "manifest.json").write_bytes(text.encode("utf-8", "replace"))
    try:
        read_manifest(d)
    except Exception as exc:  # noqa: BLE001
        one_line(exc)


CSV_HEADERS = ["t_ns", "speed_mps", "accel_lon_mps2", "steering_angle_rad", "lat_deg", "lon_deg", "yaw_rate_rps", "bogus"]


@SETTINGS
@given(st.lists(st.sampled_from(CSV_HEADERS), min_size=1, max_size=5, unique=True),
       st.lists(st.lists(st.one_of(st.integers(-2**64, 2**64), st.floats(allow_nan=True), st.text(alphabet="0123456789.-eE,\"x ", max_size=6)),
                         min_size=0, max_size=6), max_size=8))
def test_landing_telemetry_csv_never_tracebacks(tmp_path_factory, header, rows):
    from fleetcore.ingest.validate import read_telemetry

    p = tmp_path_factory.mktemp("t") / "telemetry.csv"
    p.write_text(",".join(header) + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows))
    try:
        table, dups = read_telemetry(p, fmt="csv", rel="telemetry.csv")
    except Exception as exc:  # noqa: BLE001
        one_line(exc)
    else:
        assert table.num_rows >= 0 and dups >= 0


@SETTINGS
@given(st.binary(max_size=600))
def test_landing_telemetry_parquet_bytes_never_traceback(tmp_path_factory, data):
    from fleetcore.ingest.validate import read_telemetry

    p = tmp_path_factory.mktemp("t") / "telemetry.parquet"
    p.write_bytes(b"PAR1" + data + b"PAR1")
    try:
        read_telemetry(p, fmt="parquet", rel="telemetry.parquet")
    except Exception as exc:  # noqa: BLE001
        one_line(exc)


NMEA_LINES = st.one_of(
    st.sampled_from(["$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A",
                     "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47",
                     "$GPRMC,,V,,,,,,,,,,N*53", "$GPRMC,999999,A,9999.999,N,99999.999,E,,,,,,*00"]),
    st.text(alphabet="$GPRMCA,0123456789.*NSEW", max_size=60))


@SETTINGS
@given(st.sampled_from(["nmea", "gpx", "csv"]), st.lists(NMEA_LINES, max_size=6), st.text(max_size=200))
def test_importer_telemetry_text_never_tracebacks(tmp_path_factory, fmt, lines, noise):
    from fleetcore.ingest.importers.dashcam import read_telemetry

    d = tmp_path_factory.mktemp("imp")
    if fmt == "nmea":
        text = "\n".join(lines) + "\n"
    elif fmt == "gpx":
        text = ('<?xml version="1.0"?><gpx version="1.1" creator="t"><trk><trkseg>'
                f'<trkpt lat="{noise[:5] or "1"}" lon="2"><time>{noise[5:30] or "2020-01-01T00:00:00Z"}</time></trkpt>'
                '</trkseg></trk></gpx>') if noise else noise
    else:
        text = "time,lat,lon,speed\n" + noise
    p = d / f"log.{fmt}"
    p.write_bytes(text.encode("utf-8", "replace"))
    try:
        read_telemetry(p, utc_offset_ns=0, fmt=fmt)
    except Exception as exc:  # noqa: BLE001
        one_line(exc)


TRIGGER_KEYS = ["name", "version", "where", "min_duration_s", "pre_roll_s", "post_roll_s", "cooldown_s", "peak", "sample", "description", "bogus"]


@SETTINGS
@given(st.dictionaries(st.sampled_from(TRIGGER_KEYS), st.one_of(
    st.sampled_from(["speed_mps < 8", "accel_lon_mps2 <", "1 = 1; DROP TABLE x", "speed_mps > 3 AND (", "hard_brake", "min", "max"]),
    json_values), max_size=8))
def test_trigger_parsing_never_tracebacks(raw):
    from fleetcore.triggers.library import parse_trigger

    try:
        parse_trigger(raw, path="t.yaml")
    except Exception as exc:  # noqa: BLE001
        one_line(exc)


@SETTINGS
@given(st.text(max_size=300))
def test_trigger_file_text_never_tracebacks(tmp_path_factory, text):
    from fleetcore.triggers.library import load_trigger_file

    p = tmp_path_factory.mktemp("trig") / "t.yaml"
    p.write_bytes(text.encode("utf-8", "replace"))
    try:
        load_trigger_file(p)
    except Exception as exc:  # noqa: BLE001
        one_line(exc)


SPEC_KEYS = ["name", "description", "store", "where", "sql", "cap_per_trigger", "cap_per_vehicle", "class_weights", "split", "seed",
             "drop_near_duplicates", "privacy_required", "jpeg_quality", "limits", "frames_per_clip", "format", "bogus"]


@SETTINGS
@given(st.dictionaries(st.sampled_from(SPEC_KEYS), st.one_of(
    st.sampled_from(["braking", "primary_trigger = 'hard_brake'", "SELECT * FROM clips", "SELECT * FROM read_csv('/etc/passwd')",
                     "((((((((", 100000000, -1, {"max_rows": 0}, {"train": 0.8, "val": 0.2}]),
    json_values), max_size=8))
def test_dataset_spec_parsing_never_tracebacks(raw):
    from fleetcore.datasets.spec import parse_spec

    try:
        parse_spec(raw, path="spec.yaml")
    except Exception as exc:  # noqa: BLE001
        one_line(exc)


SQL_TOKENS = st.sampled_from(["SELECT", "*", "clip_id", "FROM", "clips", "clip_labels", "WHERE", "AND", "OR", "NOT", "(", ")", "=", "<", "'x'",
                              "1", "read_parquet('/etc/passwd')", "JOIN", "ON", ",", "CROSS", "UNION", "WITH", "a", "AS", "LIMIT", "10",
                              "INSERT", "INTO", "DROP", "COPY", ";", "--", "/*", "CASE", "WHEN", "THEN", "END", "\n"])


@SETTINGS
@given(st.one_of(st.lists(SQL_TOKENS, max_size=40).map(" ".join), st.text(max_size=120),
                 st.integers(1, 4000).map(lambda n: "SELECT * FROM clips WHERE " + "(" * n + "1=1" + ")" * n),
                 st.integers(1, 8000).map(lambda n: "SELECT * FROM clips WHERE " + " OR ".join(["speed_mean_mps > 1"] * n))))
def test_sql_guard_never_tracebacks(sql):
    from fleetcore.queryguard import check_sql

    try:
        check_sql(sql, tables=["clips", "clip_labels"])
    except Exception as exc:  # noqa: BLE001
        one_line(exc)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_yaml_config_text_never_tracebacks(text):
    """Any text as a privacy or labels options file: options or a one-line ConfigError."""
    import tempfile

    from fleetcore.stages.options import LabelsOptions, PrivacyOptions

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "opts.yaml"
        p.write_bytes(text.encode("utf-8", "replace"))
        for cls in (PrivacyOptions, LabelsOptions):
            try:
                cls.from_file(p)
            except Exception as exc:  # noqa: BLE001
                one_line(exc)


def test_strategies_reach_the_valid_paths():
    """The strategies above are not all rejected inputs: a valid manifest and a valid trigger parse."""
    from fleetcore.landing.drives import validate_manifest
    from fleetcore.triggers.library import parse_trigger

    m = validate_manifest(json.loads(json.dumps({"format_version": 1, "vehicle_id": "veh-1", "drive_id": "d-1", "utc_offset_ns": 0, "source": "test",
                                                 "telemetry": None, "cameras": [{"name": "front", "codec": "h264",
                                                 "files": [{"path": "cameras/front/000.mp4", "start_ns": 0, "frame_times": None}]}]})))
    assert m["vehicle_id"] == "veh-1"
    assert parse_trigger(yaml.safe_load("name: slow\nversion: 1\nwhere: speed_mps < 8\n"), path="t.yaml").name == "slow"
