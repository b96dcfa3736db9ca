"""Built-in cars (opendbc), expression mappings, extra telemetry columns, split logs, comma2k19 raw CAN,
vendor CSV profiles and J1939 (docs/importers.md)."""

from __future__ import annotations

import datetime as dt
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from fleetcore.errors import ConfigError, SourceImportError
from fleetcore.ingest.importers import import_candump, import_comma2k19, import_csv, import_mdf
from fleetcore.ingest.importers.cars import CARS, load_car_dbc
from fleetcore.ingest.validate import validate_drive
from fleetcore.landing.drives import read_manifest
from schemas import TELEMETRY

COMMA = "telemetry/comma2k19_b0c9d2329ad1606b_2018-08-02--08-34-47_seg40"
CSS = "telemetry/css_canedge_gnss_imu_2F6913DB_2023-01-11"
MF4 = "00000001-63BEF5CD.MF4"
T0 = 1700000000.0


def _telemetry(drive: Path):
    table = pq.read_table(drive / "telemetry.parquet")
    TELEMETRY.validate(table)
    validate_drive(drive)  # the landed drive (with its extra columns) passes validation
    return table


def _write_candump(path: Path, frames: list[tuple[float, int, bytes]], iface: str = "can0") -> Path:
    path.write_text("".join(f"({t:.6f}) {iface} {a:03X}#{d.hex().upper()}\n" for t, a, d in sorted(frames)), encoding="ascii")
    return path


def _toyota_frames(t0: float, n: int, *, kmh: float = 36.0) -> list[tuple[float, int, bytes]]:
    db = load_car_dbc(CARS["toyota_rav4"])
    ws = db.get_message_by_name("WHEEL_SPEEDS")
    st = db.get_message_by_name("STEER_ANGLE_SENSOR")
    rpm = db.get_message_by_name("ENGINE_RPM")
    frames = []
    for i in range(n):
        t = t0 + 0.02 * i
        v = kmh + 0.01 * i
        frames.append((t, ws.frame_id, ws.encode({"WHEEL_SPEED_FL": v + 1, "WHEEL_SPEED_FR": v - 1, "WHEEL_SPEED_RL": v + 0.5,
                                                 "WHEEL_SPEED_RR": v - 0.5}, strict=False)))
        frames.append((t + 0.005, st.frame_id, st.encode({"STEER_ANGLE": 12.0, "STEER_FRACTION": 0.3, "STEER_RATE": 0}, strict=False)))
        if i % 5 == 0:
            frames.append((t + 0.007, rpm.frame_id, rpm.encode({"RPM": 1500.0, "ENGINE_RUNNING": 1}, strict=False)))
    return frames


# --------------------------------------------------------------------------------------
# cars, expressions, extra columns
# --------------------------------------------------------------------------------------
def test_candump_car_expressions_and_extra_columns(tmp_path: Path) -> None:
    log = _write_candump(tmp_path / "rav4.log", _toyota_frames(T0, 100))
    ref = import_candump(log, None, None, tmp_path / "landing", vehicle_id="rav4", car="toyota_rav4")
    d = _telemetry(ref.path).to_pydict()
    # speed = mean of the four wheel speeds (km/h) in m/s; the DBC's -67.67 km/h offset is applied by cantools
    assert d["speed_mps"][0] == pytest.approx(36.0 / 3.6, abs=0.01)
    # steering = STEER_ANGLE + STEER_FRACTION (deg) in rad
    steer = [v for v in d["steering_angle_rad"] if v is not None]
    assert steer and steer[0] == pytest.approx(math.radians(12.3), abs=1e-3)
    assert "x_engine_rpm" in d and pytest.approx(1500.0, abs=1) == next(v for v in d["x_engine_rpm"] if v is not None)
    assert "x_vehicle_speed_kmh" not in d  # mapped but never sent: left out
    m = read_manifest(ref.path)
    assert "car toyota_rav4" in m["notes"] and "buses: can0" in m["notes"]


def test_every_car_resolves_against_its_opendbc_file() -> None:
    from fleetcore.ingest.importers.candump import can_setup

    assert {"toyota_rav4", "toyota_prius", "honda_civic"} <= set(CARS)
    for name in CARS:
        setup = can_setup(None, None, name)
        assert "WHEEL_SPEEDS" in setup.need


def test_bad_expressions_are_one_line_config_errors(tmp_path: Path) -> None:
    log = _write_candump(tmp_path / "rav4.log", _toyota_frames(T0, 10))
    bad = tmp_path / "map.yaml"
    for expr, what in [("WHEEL_SPEEDS.WHEEL_SPEED_FL ** 2", "Pow"), ("__import__('os').getcwd()", "Call"),
                       ("WHEEL_SPEEDS.WHEEL_SPEED_FL +", "parse"), ("3.6 * 2", "names no signal")]:
        bad.write_text(yaml.safe_dump({"speed_mps": {"expr": expr}}))
        with pytest.raises(ConfigError, match=what) as e:
            import_candump(log, None, bad, tmp_path / "landing", vehicle_id="v", car="toyota_rav4")
        assert e.value.path == str(bad) and e.value.field == "speed_mps" and "\n" not in str(e.value)
    bad.write_text('speed_mps: {expr: "WHEEL_SPEEDS.WHEEL_SPEED_FL", unit: "furlong/fortnight"}\n')
    with pytest.raises(ConfigError, match="unknown unit") as e:
        import_candump(log, None, bad, tmp_path / "landing", vehicle_id="v", car="toyota_rav4")
    assert e.value.field == "speed_mps.unit"
    bad.write_text('speed_mps: {expr: "WHEEL_SPEEDS.WHEEL_SPEED_FL", unit: "deg"}\n')
    with pytest.raises(ConfigError, match="angle"):
        import_candump(log, None, bad, tmp_path / "landing", vehicle_id="v", car="toyota_rav4")
    bad.write_text('speed_mps: "STEER_ANGLE"\n')  # a bare name in two messages is ambiguous
    with pytest.raises(SourceImportError, match="several messages"):
        import_candump(log, None, bad, tmp_path / "landing", vehicle_id="v", car="toyota_rav4")
    bad.write_text('speed_mps: "WHEEL_SPEED_FL / 3.6"\nengine_rpm: ENGINE_RPM.RPM\n')  # extras need the x_ prefix
    with pytest.raises(SourceImportError, match="x_<name>"):
        import_candump(log, None, bad, tmp_path / "landing", vehicle_id="v", car="toyota_rav4")
    with pytest.raises(ConfigError, match="unknown car"):
        import_candump(log, None, None, tmp_path / "landing", vehicle_id="v", car="delorean")


def test_user_mapping_with_bare_names_and_units(tmp_path: Path) -> None:
    log = _write_candump(tmp_path / "rav4.log", _toyota_frames(T0, 50))
    mapping = tmp_path / "map.yaml"
    mapping.write_text('speed_mps: {expr: "(WHEEL_SPEED_FL + WHEEL_SPEED_FR) / 2", unit: km/h}\n'
                       'x_rpm_per_100: {expr: "ENGINE_RPM.RPM / 100"}\n')
    ref = import_candump(log, None, mapping, tmp_path / "landing", vehicle_id="v", car="toyota_rav4")
    d = _telemetry(ref.path).to_pydict()
    assert d["speed_mps"][0] == pytest.approx(36.0 / 3.6, abs=0.01)
    assert next(v for v in d["x_rpm_per_100"] if v is not None) == pytest.approx(15.0, abs=0.01)


# --------------------------------------------------------------------------------------
# comma2k19 raw CAN
# --------------------------------------------------------------------------------------
def _segment_with_raw_can(real: Path, tmp: Path) -> Path:
    """The shared segment plus raw_can arrays (t, src, address, data as |S8, like comma2k19) whose
    WHEEL_SPEEDS frames carry the segment's processed wheel speeds (the real raw CAN is not shared)."""
    seg = tmp / "comma2k19_b0c9d2329ad1606b_2018-08-02--08-34-47_seg40"
    shutil.copytree(real / COMMA, seg, ignore=shutil.ignore_patterns("preview.png"))
    for p in seg.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    wt = np.load(seg / "processed_log/CAN/wheel_speed/t")
    wv = np.load(seg / "processed_log/CAN/wheel_speed/value")
    db = load_car_dbc(CARS["toyota_rav4"])
    ws = db.get_message_by_name("WHEEL_SPEEDS")
    rows = []
    for t, (fl, fr, rl, rr) in zip(wt, wv):
        rows.append((t, 0, ws.frame_id, ws.encode({"WHEEL_SPEED_FL": fl * 3.6, "WHEEL_SPEED_FR": fr * 3.6,
                                                   "WHEEL_SPEED_RL": rl * 3.6, "WHEEL_SPEED_RR": rr * 3.6}, strict=False)))
        rows.append((t + 0.001, 128, ws.frame_id, bytes(8)))  # a tx echo on another bus: ignored
        rows.append((t + 0.002, 0, 0x7FF, b"\x01\x00\x00"))  # not in the DBC
    raw = seg / "processed_log/CAN/raw_can"
    raw.mkdir()
    for name, arr in (("t", np.array([r[0] for r in rows])), ("src", np.array([r[1] for r in rows], dtype=np.uint8)),
                      ("address", np.array([r[2] for r in rows], dtype=np.uint32)), ("data", np.array([r[3] for r in rows], dtype="S8"))):
        with open(raw / name, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    return seg


def test_comma2k19_raw_can_speed_matches_processed(real_data: Path, tmp_path: Path) -> None:
    seg = _segment_with_raw_can(real_data, tmp_path)
    ref = import_comma2k19(seg, tmp_path / "landing", car="toyota_rav4")
    tel = _telemetry(ref.path).to_pydict()
    st = np.load(seg / "processed_log/CAN/speed/t")
    sv = np.load(seg / "processed_log/CAN/speed/value").ravel()
    t = np.asarray(tel["t_ns"]) / 1e9
    want = np.interp(t, st, sv)
    got = np.asarray(tel["speed_mps"])
    assert len(got) > 5000
    assert np.max(np.abs(got - want) / want) < 0.01
    assert "raw_can" in read_manifest(ref.path)["notes"]
    # without processed speed the car is found from the dongle id
    shutil.rmtree(seg / "processed_log/CAN/speed")
    ref2 = import_comma2k19(seg, tmp_path / "landing2")
    got2 = np.asarray(_telemetry(ref2.path).column("speed_mps"))
    assert np.allclose(got2, got)


# --------------------------------------------------------------------------------------
# drives split over files
# --------------------------------------------------------------------------------------
def _second_part(real: Path, tmp: Path, shift_s: float) -> Path:
    from asammdf import MDF

    src = MDF(str(real / CSS / MF4))
    try:
        src.header.start_time = src.start_time + dt.timedelta(seconds=shift_s)
        out = Path(src.save(str(tmp / f"shifted-{shift_s:g}.mf4"), overwrite=True))
    finally:
        src.close()
    return out


def test_mdf_parts_land_as_one_continuous_drive(real_data: Path, tmp_path: Path) -> None:
    p1 = real_data / CSS / MF4
    dbc = real_data / CSS / "gnss.dbc"
    p2 = _second_part(real_data, tmp_path, 171.0)  # frames span 14.1..184.7 s: part 2 starts ~0.4 s after part 1 ends
    one = _telemetry(import_mdf(p1, dbc, tmp_path / "single", vehicle_id="2F6913DB").path)
    ref = import_mdf([p2, p1], dbc, tmp_path / "landing", vehicle_id="2F6913DB")  # any order
    m = read_manifest(ref.path)
    assert m["utc_offset_ns"] == int(dt.datetime(2023, 1, 11, 17, 41, 55, tzinfo=dt.UTC).timestamp()) * 10**9
    assert "2 file(s)" in m["notes"] and "buses: CAN2" in m["notes"] and re.fullmatch(r"2F6913DB_20230111T174155Z_[0-9a-f]{6}", ref.drive_id)
    t = np.asarray(_telemetry(ref.path).column("t_ns"))
    assert len(t) > 1.9 * one.num_rows
    assert np.max(np.diff(t)) <= 0.5e9  # continuous track across the junction
    assert t[-1] / 1e9 == pytest.approx(171.0 + one.column("t_ns")[-1].as_py() / 1e9, abs=0.1)
    # each part alone gets its own default drive id (the second import does not collide with the first)
    r1 = import_mdf(p1, dbc, tmp_path / "parts", vehicle_id="2F6913DB")
    r2 = import_mdf(p2, dbc, tmp_path / "parts", vehicle_id="2F6913DB")
    assert r1.drive_id != r2.drive_id
    # overlapping parts are refused
    with pytest.raises(SourceImportError, match="before the end"):
        import_mdf([p1, _second_part(real_data, tmp_path, 60.0)], dbc, tmp_path / "bad", vehicle_id="2F6913DB")


def test_candump_parts_gap_reported_and_cli(tmp_path: Path) -> None:
    a = _write_candump(tmp_path / "a.log", _toyota_frames(T0, 100))  # 2 s
    b = _write_candump(tmp_path / "b.log", _toyota_frames(T0 + 5.0, 100), iface="can1")  # 3 s gap
    from fleet_cli.main import cli

    res = CliRunner().invoke(cli, ["import", "candump", str(b), str(a), "--landing", str(tmp_path / "landing"), "--car", "toyota_rav4",
                                   "--vehicle", "rav4", "--json"])
    assert res.exit_code == 0, res.output
    drive = Path(tmp_path / "landing" / "rav4")
    (d,) = [p for p in drive.iterdir() if p.is_dir()]
    m = read_manifest(d)
    assert "gap of" in m["notes"] and "buses: can0, can1" in m["notes"]
    t = np.asarray(_telemetry(d).column("t_ns")) / 1e9
    assert t[0] == 0 and t[-1] == pytest.approx(6.98, abs=0.03)
    assert not np.any((t > 2.1) & (t < 4.9))  # nothing invented inside the gap
    res = CliRunner().invoke(cli, ["import", "candump", str(a), str(b), "--landing", str(tmp_path / "l2"), "--car", "toyota_rav4",
                                   "--vehicle", "rav4", "--max-gap-s", "1"])
    assert res.exit_code == 1 and "max_gap_s" in res.output


# --------------------------------------------------------------------------------------
# vendor CSV profiles
# --------------------------------------------------------------------------------------
def test_csv_profile_units_time_zone_and_extras(tmp_path: Path) -> None:
    csv_path = tmp_path / "vendor.csv"
    t0_ms = 1_700_000_000_000
    csv_path.write_text("ts;Vel;Steer;RPM;Junk\n" + "".join(f"{t0_ms + 100 * i};{72.0};{10 * (i % 3)};{900 + i};x\n" for i in range(20)))
    profile = tmp_path / "p.yaml"
    profile.write_text("time: {column: ts, unit: ms}\ndelimiter: ';'\ncolumns:\n  Vel: {to: speed_mps, unit: km/h}\n"
                       "  Steer: {to: steering_angle_rad, unit: deg}\n  RPM: x_engine_rpm\n")
    ref = import_csv(csv_path, profile, tmp_path / "landing", vehicle_id="truck-1")
    m = read_manifest(ref.path)
    assert m["cameras"] == [] and m["source"] == "csv" and m["utc_offset_ns"] == t0_ms * 10**6
    d = _telemetry(ref.path).to_pydict()
    assert d["t_ns"][:2] == [0, 100_000_000] and d["speed_mps"][0] == pytest.approx(20.0)
    assert d["steering_angle_rad"][1] == pytest.approx(math.radians(10)) and d["x_engine_rpm"][3] == 903.0
    # naive local text times in a time zone
    csv2 = tmp_path / "local.csv"
    csv2.write_text("Zeit,Geschw\n01.07.2024 10:00:00.0,36\n01.07.2024 10:00:00.5,36\n")
    p2 = tmp_path / "p2.yaml"
    p2.write_text("time: {column: Zeit, format: '%d.%m.%Y %H:%M:%S.%f', timezone: Europe/Berlin}\ncolumns:\n  Geschw: {to: speed_mps, unit: km/h}\n")
    ref2 = import_csv(csv2, p2, tmp_path / "landing", vehicle_id="truck-1")
    assert read_manifest(ref2.path)["utc_offset_ns"] == int(dt.datetime(2024, 7, 1, 8, 0, tzinfo=dt.UTC).timestamp()) * 10**9


def test_csv_profile_speed_from_positions_and_steering_only(tmp_path: Path) -> None:
    csv_path = tmp_path / "gps.csv"
    # 1e-4 deg of latitude per second = 11.12 m/s
    csv_path.write_text("sec,la,lo\n" + "".join(f"{i},{48.0 + 1e-4 * i},{11.0}\n" for i in range(10)))
    profile = tmp_path / "p.yaml"
    profile.write_text("time: {column: sec, unit: s, start_utc: '2024-05-01T12:00:00Z'}\ncolumns: {la: lat_deg, lo: lon_deg}\n")
    ref = import_csv(csv_path, profile, tmp_path / "landing", vehicle_id="bike")
    d = _telemetry(ref.path).to_pydict()
    assert d["speed_mps"][5] == pytest.approx(11.12, abs=0.05) and d["heading_rad"][5] == pytest.approx(0.0, abs=1e-3)
    steer = tmp_path / "steer.csv"
    steer.write_text("t_us,wheel\n" + "".join(f"{1_700_000_000_000_000 + 10_000 * i},{-5 + i}\n" for i in range(10)))
    sp = tmp_path / "s.yaml"
    sp.write_text("time: {column: t_us, unit: us}\ncolumns: {wheel: {to: steering_angle_rad, unit: deg}}\n")
    # a steering-only log lands with its speed unknown (null), validates, and curates
    ref = import_csv(steer, sp, tmp_path / "nospeed", vehicle_id="rig")
    vd = validate_drive(ref.path)
    assert vd.telemetry.column("speed_mps").null_count == vd.telemetry.num_rows == 10
    assert vd.telemetry.column("steering_angle_rad")[9].as_py() == pytest.approx(math.radians(4))
    assert "no speed in the log" in vd.manifest["notes"] and any("null on every row" in w for w in vd.warnings)
    sp.write_text("time: {column: t_us, unit: us}\ncolumns: {wheel: {to: steering_angle_rad, unit: deg}}\nassume_speed_mps: 0\n")
    from fleet_cli.main import cli

    res = CliRunner().invoke(cli, ["import", "csv", str(steer), "--profile", str(sp), "--landing", str(tmp_path / "landing"), "--vehicle", "rig", "--json"])
    assert res.exit_code == 0, res.output
    (d2,) = (tmp_path / "landing" / "rig").iterdir()
    tel = _telemetry(d2).to_pydict()
    assert len(tel["t_ns"]) == 10 and tel["steering_angle_rad"][0] == pytest.approx(math.radians(-5))
    sp.write_text("time: {column: t_us, unit: fortnights}\ncolumns: {wheel: steering_angle_rad}\n")
    with pytest.raises(ConfigError, match="time.unit"):
        import_csv(steer, sp, tmp_path / "landing", vehicle_id="rig")


# --------------------------------------------------------------------------------------
# J1939
# --------------------------------------------------------------------------------------
J1939_DBC = """VERSION ""

NS_ :

BS_:

BU_: Engine Brakes

BO_ 2364540158 EEC1: 8 Engine
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX

BO_ 2566844926 CCVS1: 8 Brakes
 SG_ WheelBasedVehicleSpeed : 8|16@1+ (0.00390625,0) [0|250.996] "km/h" Vector__XXX

BA_DEF_  "ProtocolType" STRING ;
BA_DEF_ BO_  "VFrameFormat" ENUM  "StandardCAN","ExtendedCAN","reserved","J1939PG";
BA_DEF_DEF_  "ProtocolType" "";
BA_DEF_DEF_  "VFrameFormat" "J1939PG";
BA_ "ProtocolType" "J1939";
BA_ "VFrameFormat" BO_ 2364540158 3;
BA_ "VFrameFormat" BO_ 2566844926 3;
"""


def test_j1939_frames_match_by_pgn(tmp_path: Path) -> None:
    import cantools
    from cantools.j1939 import frame_id_pack

    dbc = tmp_path / "j1939.dbc"
    dbc.write_text(J1939_DBC)
    db = cantools.database.load_file(str(dbc))
    eec1, ccvs = db.get_message_by_name("EEC1"), db.get_message_by_name("CCVS1")
    assert eec1.protocol == "j1939"
    lines = []
    for i in range(50):
        t = T0 + 0.1 * i
        # other priority / source address than the DBC's ids (0x0CF004FE, 0x18FEF1FE)
        speed_id = frame_id_pack(6, 0, 0, 0xFE, 0xF1, 0x17)
        rpm_id = frame_id_pack(3, 0, 0, 0xF0, 0x04, 0x00)
        lines.append(f"({t:.6f}) can0 {speed_id:08X}#{ccvs.encode({'WheelBasedVehicleSpeed': 72.0 + i * 0.1}).hex().upper()}\n")
        lines.append(f"({t + 0.01:.6f}) can0 {rpm_id:08X}#{eec1.encode({'EngineSpeed': 1200.0}).hex().upper()}\n")
    log = tmp_path / "truck.log"
    log.write_text("".join(lines))
    mapping = tmp_path / "map.yaml"
    mapping.write_text('speed_mps: {expr: CCVS1.WheelBasedVehicleSpeed, unit: km/h}\nx_engine_rpm: EEC1.EngineSpeed\n')
    ref = import_candump(log, dbc, mapping, tmp_path / "landing", vehicle_id="truck")
    d = _telemetry(ref.path).to_pydict()
    assert d["speed_mps"][0] == pytest.approx(20.0, abs=0.01)
    assert next(v for v in d["x_engine_rpm"] if v is not None) == pytest.approx(1200.0)


# --------------------------------------------------------------------------------------
# the telemetry contract's extra columns
# --------------------------------------------------------------------------------------
def test_contract_declares_extra_columns() -> None:
    import pyarrow as pa

    from schemas import SchemaValidationError

    assert TELEMETRY.version == 1 and TELEMETRY.schema.metadata[b"fleet.contract_extra_prefix"] == b"x_"
    assert TELEMETRY.is_extra("x_engine_rpm") and not TELEMETRY.is_extra("engine_rpm") and not TELEMETRY.is_extra("x_Bad")
    t = pa.table({"t_ns": [1, 2], "speed_mps": [1.0, 2.0], "x_engine_rpm": [800, 900], "other": [1, 2]})
    assert "x_engine_rpm" not in TELEMETRY.conform(t).column_names
    kept = TELEMETRY.conform(t, extras=True)
    assert kept.column_names[-1] == "x_engine_rpm" and kept.schema.field("x_engine_rpm").type == pa.float64()
    TELEMETRY.validate(kept)
    nan = TELEMETRY.conform(pa.table({"t_ns": [1, 2], "speed_mps": [1.0, 2.0], "x_a": [1.0, float("nan")]}), extras=True)
    with pytest.raises(SchemaValidationError, match="x_a"):
        TELEMETRY.validate(nan)
    with pytest.raises(SchemaValidationError, match="x_s"):
        TELEMETRY.conform(pa.table({"t_ns": [1], "speed_mps": [1.0], "x_s": ["fast"]}), extras=True)


def test_mdf_with_a_car(tmp_path: Path) -> None:
    """An MF4 bus log (written with python-can's MF4Writer) decoded with --car (the DBC comes from opendbc)."""
    import can

    path = tmp_path / "rav4.mf4"
    writer = can.MF4Writer(str(path))
    try:
        for t, a, d in sorted(_toyota_frames(T0, 100)):
            writer.on_message_received(can.Message(timestamp=t, arbitration_id=a, data=d, is_extended_id=False, channel=0))
    finally:
        writer.stop()
    ref = import_mdf(path, None, tmp_path / "landing", vehicle_id="rav4", car="toyota_rav4")
    d = _telemetry(ref.path).to_pydict()
    assert d["speed_mps"][0] == pytest.approx(36.0 / 3.6, abs=0.01)
    assert next(v for v in d["steering_angle_rad"] if v is not None) == pytest.approx(math.radians(12.3), abs=1e-3)
    assert "x_engine_rpm" in d and "car toyota_rav4" in read_manifest(ref.path)["notes"]
