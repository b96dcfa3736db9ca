"""`fleet import` backends on real bytes: Udacity dashcam video, comma2k19 segment, CANedge MF4, candump."""

from __future__ import annotations

import datetime as dt
import math
import re
import shutil
from pathlib import Path

import ffmpeg
import numpy as np
import pyarrow.parquet as pq
import pytest

from fleetcore.errors import ConfigError, SourceImportError
from fleetcore.ingest.importers import (
    import_candump,
    import_comma2k19,
    import_dashcam,
    import_mdf,
)
from fleetcore.landing.drives import UPLOAD_COMPLETE, iter_files, read_manifest
from fleetcore.video.ffmpeg import run
from schemas import TELEMETRY

UDACITY = "video/udacity_lanelines_solidWhiteRight.mp4"
COMMA = "telemetry/comma2k19_b0c9d2329ad1606b_2018-08-02--08-34-47_seg40"
CSS = "telemetry/css_canedge_gnss_imu_2F6913DB_2023-01-11"
UDACITY_CREATED = dt.datetime(2016, 8, 28, 21, 16, 8, tzinfo=dt.UTC)
UDACITY_CREATED_NS = 1472418968 * 10**9
KNOT = 1852.0 / 3600.0


@pytest.fixture
def real(real_data: Path) -> Path:
    """The shared real sample data (conftest's ``real_data``; skips when absent)."""
    return real_data


def _telemetry(drive: Path):
    table = pq.read_table(drive / "telemetry.parquet")
    TELEMETRY.validate(table)
    return table


def _snapshot(drive: Path) -> dict[str, bytes]:
    return {str(p.relative_to(drive)): p.read_bytes() for p in iter_files(drive)}


# --------------------------------------------------------------------------------------
# Generated telemetry fixtures for the Udacity clip: 9 s north-east at 25 m/s
# --------------------------------------------------------------------------------------
LAT0, LON0 = 37.4, -122.1
SPEED = 25.0
COURSE_DEG = 45.0


def _track(n: int = 10) -> list[tuple[dt.datetime, float, float]]:
    out = []
    for i in range(n):
        d = SPEED * i
        north = d * math.cos(math.radians(COURSE_DEG))
        east = d * math.sin(math.radians(COURSE_DEG))
        lat = LAT0 + math.degrees(north / 6_371_000.0)
        lon = LON0 + math.degrees(east / (6_371_000.0 * math.cos(math.radians(LAT0))))
        out.append((UDACITY_CREATED + dt.timedelta(seconds=i), lat, lon))
    return out


def _gpx(tmp: Path, *, with_speed: bool) -> Path:
    pts = []
    for t, lat, lon in _track():
        ext = f"<extensions><speed>{SPEED}</speed></extensions>" if with_speed else ""
        pts.append(f'<trkpt lat="{lat:.7f}" lon="{lon:.7f}"><time>{t.strftime("%Y-%m-%dT%H:%M:%SZ")}</time>{ext}</trkpt>')
    p = tmp / ("speed.gpx" if with_speed else "plain.gpx")
    p.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="fleet-tests" xmlns="http://www.topografix.com/GPX/1/1">'
        "<trk><trkseg>" + "".join(pts) + "</trkseg></trk></gpx>\n",
        encoding="utf-8",
    )
    return p


def _nmea(tmp: Path) -> Path:
    import pynmea2

    lines = []
    for t, lat, lon in _track():
        la = f"{int(abs(lat)):02d}{(abs(lat) % 1) * 60:07.4f}"
        lo = f"{int(abs(lon)):03d}{(abs(lon) % 1) * 60:07.4f}"
        hms = t.strftime("%H%M%S.00")
        rmc = pynmea2.RMC("GP", "RMC", (hms, "A", la, "N" if lat >= 0 else "S", lo, "E" if lon >= 0 else "W",
                                        f"{SPEED / KNOT:.2f}", f"{COURSE_DEG:.1f}", t.strftime("%d%m%y"), "", ""))
        gga = pynmea2.GGA("GP", "GGA", (hms, la, "N", lo, "W", "1", "08", "0.9", "10.0", "M", "-30.0", "M", "", ""))
        lines += [str(gga), str(rmc)]
    lines.insert(3, "garbage line")
    lines.insert(5, "$GPRMC,broken*00")
    p = tmp / "track.nmea"
    p.write_text("\n".join(lines) + "\n", encoding="ascii")
    return p


def _csv(tmp: Path) -> Path:
    rows = ["time,speed_kmh,lat,lon,heading_deg,steering_angle_deg"]
    for i, (t, lat, lon) in enumerate(_track()):
        rows.append(f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')},{SPEED * 3.6:.3f},{lat:.7f},{lon:.7f},{COURSE_DEG},{'' if i == 4 else 1.5}")
    p = tmp / "track.csv"
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return p


# --------------------------------------------------------------------------------------
# dashcam
# --------------------------------------------------------------------------------------
def test_dashcam_video_only(real: Path, tmp_path: Path) -> None:
    video = real / UDACITY
    ref = import_dashcam(video, tmp_path, vehicle_id="udacity")
    m = read_manifest(ref.path)
    assert ref.drive_id == "udacity_20160828T211608Z"
    assert m["utc_offset_ns"] == UDACITY_CREATED_NS  # from the container's creation_time
    assert m["telemetry"] is None and m["source"] == "dashcam"
    assert m["cameras"] == [
        {"name": "front", "codec": "h264", "files": [{"path": "cameras/front/000.mp4", "start_ns": 0, "frame_times": None}]}
    ]
    assert (ref.path / "cameras/front/000.mp4").read_bytes() == video.read_bytes()
    assert (ref.path / UPLOAD_COMPLETE).is_file()


def test_dashcam_gpx_plain_and_with_speed(real: Path, tmp_path: Path) -> None:
    for with_speed in (False, True):
        ref = import_dashcam(real / UDACITY, tmp_path, vehicle_id="udacity", drive_id=f"gpx-{int(with_speed)}",
                             camera="dash", telemetry=_gpx(tmp_path, with_speed=with_speed))
        m = read_manifest(ref.path)
        assert m["cameras"][0]["name"] == "dash"
        assert m["telemetry"] == {"path": "telemetry.parquet", "format": "parquet"}
        t = _telemetry(ref.path).to_pydict()
        assert t["t_ns"] == [i * 10**9 for i in range(10)]  # UTC fixes mapped onto the video clock
        assert np.allclose(t["speed_mps"], SPEED, atol=0.05)
        assert np.allclose(t["heading_rad"], math.radians(COURSE_DEG), atol=0.01)
        assert abs(t["lat_deg"][0] - LAT0) < 1e-6 and abs(t["lon_deg"][0] - LON0) < 1e-6


def test_dashcam_nmea(real: Path, tmp_path: Path) -> None:
    ref = import_dashcam(real / UDACITY, tmp_path, vehicle_id="udacity", telemetry=_nmea(tmp_path))
    t = _telemetry(ref.path).to_pydict()
    assert t["t_ns"] == [i * 10**9 for i in range(10)]
    assert np.allclose(t["speed_mps"], SPEED, atol=0.01)  # knots → m/s
    assert np.allclose(t["heading_rad"], math.radians(COURSE_DEG), atol=1e-6)
    assert abs(t["lat_deg"][-1] - _track()[-1][1]) < 1e-5
    # GGA only (no speed, no date): speed and course from successive fixes, date from the video
    gga = tmp_path / "gga.nmea"
    gga.write_text("".join(ln + "\n" for ln in (tmp_path / "track.nmea").read_text().splitlines() if "GGA" in ln))
    ref = import_dashcam(real / UDACITY, tmp_path, vehicle_id="udacity", drive_id="gga", telemetry=gga)
    t = _telemetry(ref.path).to_pydict()
    assert t["t_ns"] == [i * 10**9 for i in range(10)]
    assert np.allclose(t["speed_mps"], SPEED, atol=0.1)
    assert np.allclose(t["heading_rad"], math.radians(COURSE_DEG), atol=0.01)


def test_dashcam_csv_and_start_utc(real: Path, tmp_path: Path) -> None:
    start = UDACITY_CREATED - dt.timedelta(seconds=2)
    ref = import_dashcam(real / UDACITY, tmp_path, vehicle_id="udacity", telemetry=_csv(tmp_path), start_utc=start)
    m = read_manifest(ref.path)
    assert m["utc_offset_ns"] == UDACITY_CREATED_NS - 2 * 10**9
    t = _telemetry(ref.path).to_pydict()
    assert t["t_ns"][0] == 2 * 10**9 and len(t["t_ns"]) == 10
    assert np.allclose(t["speed_mps"], SPEED, atol=1e-3)
    assert t["steering_angle_rad"][4] is None  # an empty cell is a null, not NaN
    assert abs(t["steering_angle_rad"][0] - math.radians(1.5)) < 1e-12


def test_dashcam_canonical_csv(real: Path, tmp_path: Path) -> None:
    p = tmp_path / "canon.csv"
    p.write_text("t_ns,speed_mps,gear,brake\n2000000000,3.0,2,0.5\n0,1.0,1,\n1000000000,2.0,1,0.0\n1000000000,9.0,1,0.0\n")
    ref = import_dashcam(real / UDACITY, tmp_path, vehicle_id="udacity", telemetry=p, telemetry_format="csv")
    t = _telemetry(ref.path).to_pydict()
    assert t["t_ns"] == [0, 10**9, 2 * 10**9]  # sorted, duplicate time dropped (first wins)
    assert t["speed_mps"] == [1.0, 2.0, 3.0]
    assert t["gear"] == [1, 1, 2] and t["brake"] == [None, 0.0, 0.5]


def test_dashcam_deterministic(real: Path, tmp_path: Path) -> None:
    gpx = _gpx(tmp_path, with_speed=False)
    a = import_dashcam(real / UDACITY, tmp_path / "a", vehicle_id="udacity", telemetry=gpx)
    b = import_dashcam(real / UDACITY, tmp_path / "b", vehicle_id="udacity", telemetry=gpx)
    assert _snapshot(a.path) == _snapshot(b.path)


def test_dashcam_bad_inputs(real: Path, tmp_path: Path) -> None:
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("time,speed_mps\nyesterday,abc\n")
    with pytest.raises(SourceImportError) as e:
        import_dashcam(real / UDACITY, tmp_path, vehicle_id="udacity", telemetry=bad_csv)
    assert e.value.path == str(bad_csv)
    no_time = tmp_path / "notime.csv"
    no_time.write_text("speed_mps\n1.0\n")
    with pytest.raises(SourceImportError, match="time column"):
        import_dashcam(real / UDACITY, tmp_path, vehicle_id="udacity", telemetry=no_time)
    not_video = tmp_path / "clip.mp4"
    not_video.write_text("this is not a video\n")
    with pytest.raises(SourceImportError) as e:
        import_dashcam(not_video, tmp_path, vehicle_id="udacity")
    assert e.value.path == str(not_video)
    bad_gpx = tmp_path / "bad.gpx"
    bad_gpx.write_text("<gpx><trk><trkseg><trkpt lat='1' lon='2'/></trkseg></trk></gpx>")
    with pytest.raises(SourceImportError, match="time"):
        import_dashcam(real / UDACITY, tmp_path, vehicle_id="udacity", telemetry=bad_gpx)


# --------------------------------------------------------------------------------------
# comma2k19
# --------------------------------------------------------------------------------------
def test_comma2k19_segment(real: Path, tmp_path: Path) -> None:
    seg = real / COMMA
    ref = import_comma2k19(seg, tmp_path)
    assert ref.vehicle_id == "b0c9d2329ad1606b"
    assert ref.drive_id == "b0c9d2329ad1606b_2018-08-02--08-34-47_seg40"
    m = read_manifest(ref.path)
    assert m["cameras"] == [] and m["source"] == "comma2k19"  # no video.hevc in the shared sample
    # route start 2018-08-02 08:34:47 PDT; segment 40 begins 40 min later: 09:14:48 PDT = 16:14:48 UTC
    start_utc = dt.datetime.fromtimestamp((46408.55e9 + m["utc_offset_ns"]) / 1e9, tz=dt.UTC)
    assert start_utc.strftime("%Y-%m-%d %H:%M") == "2018-08-02 16:14"
    t = _telemetry(ref.path)
    d = t.to_pydict()
    sp = np.array(d["speed_mps"])
    assert 7.9 <= sp.min() < 8.1 and 19.7 < sp.max() <= 19.85  # SOURCES.md: 8.0–19.8 m/s
    st = np.array(d["steering_angle_rad"], dtype=float)
    assert math.radians(-4.7) <= st.min() < math.radians(-4.4)
    assert math.radians(2.3) < st.max() <= math.radians(2.6)
    # 100 Hz grid over the CAN speed span (~60 s)
    assert np.all(np.diff(d["t_ns"]) == 10_000_000) and 5990 <= t.num_rows <= 6000
    lat = np.array([x for x in d["lat_deg"] if x is not None])
    assert 37.7 < lat.min() and lat.max() < 37.8
    # IMU ~104 Hz: forward accel small on a highway; gravity is not in the horizontal axes
    ax = np.array([x for x in d["accel_lon_mps2"] if x is not None])
    assert abs(np.median(ax)) < 1.5
    # raw vs imported: resampled speed at a raw sample time agrees with the raw sample
    raw_t = np.load(seg / "processed_log/CAN/speed/t")
    raw_v = np.load(seg / "processed_log/CAN/speed/value").ravel()
    k = 2000
    tk = round(raw_t[k] * 1e6) * 1000
    i = int(np.searchsorted(d["t_ns"], tk))
    assert abs(sp[i] - raw_v[k]) < 0.15


def _write_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # comma2k19 leaves have no extension
        np.save(f, arr)


SEG_ARRAYS = [
    "processed_log/CAN/speed",
    "processed_log/CAN/steering_angle",
    "processed_log/IMU/accelerometer",
    "processed_log/IMU/gyro",
    "processed_log/GNSS/live_gnss_ublox",
]
N_FRAMES = 5


def _hevc(path: Path, n: int) -> None:
    src = ffmpeg.input("testsrc=size=64x48:rate=20", f="lavfi")
    run(src.output(str(path), **{"frames:v": str(n), "c:v": "libx265", "x265-params": "log-level=error"}, f="hevc"), path=path)


def _fabricate_route(real: Path, tmp: Path) -> Path:
    """Two 1-minute segments (40, 41) from the shared one, the second shifted by 60 s, each with a tiny video."""
    src = real / COMMA
    route = tmp / "b0c9d2329ad1606b|2018-08-02--08-34-47"
    for k, seg_name in enumerate(("40", "41")):
        seg = route / seg_name
        shift = 60.0 * k
        for rel in SEG_ARRAYS:
            _write_npy(seg / rel / "t", np.load(src / rel / "t") + shift)
            v = np.load(src / rel / "value")
            if rel.endswith("live_gnss_ublox"):
                v = v.copy()
                v[:, 3] += shift * 1000
            _write_npy(seg / rel / "value", v)
        ft = np.load(src / "global_pose/frame_times")[:N_FRAMES] + shift
        fg = np.load(src / "global_pose/frame_gps_times")[:N_FRAMES].copy()
        fg[:, 1] += shift
        _write_npy(seg / "global_pose/frame_times", ft)
        _write_npy(seg / "global_pose/frame_gps_times", fg)
        _hevc(seg / "video.hevc", N_FRAMES)
    return route


def test_comma2k19_route_with_video(real: Path, tmp_path: Path) -> None:
    route = _fabricate_route(real, tmp_path / "src")
    ref = import_comma2k19(route, tmp_path / "landing")
    assert ref.vehicle_id == "b0c9d2329ad1606b" and ref.drive_id == "b0c9d2329ad1606b_2018-08-02--08-34-47"
    m = read_manifest(ref.path)
    (cam,) = m["cameras"]
    assert cam["name"] == "road" and cam["codec"] == "hevc"
    assert [f["path"] for f in cam["files"]] == ["cameras/road/000.hevc", "cameras/road/001.hevc"]
    for k, f in enumerate(cam["files"]):
        assert f["start_ns"] is None
        assert (ref.path / f["path"]).read_bytes() == (route / f"{40 + k}" / "video.hevc").read_bytes()
        ft = np.load(ref.path / f["frame_times"])
        assert ft.dtype == np.int64 and ft.shape == (N_FRAMES,)
        expect = np.load(route / f"{40 + k}" / "global_pose/frame_times")
        assert np.all(np.abs(ft - expect * 1e9) < 1000)
    t = _telemetry(ref.path).to_pydict()
    span = (t["t_ns"][-1] - t["t_ns"][0]) / 1e9
    assert 119.0 < span < 120.1 and 11_900 < len(t["t_ns"]) <= 12_000
    one = _telemetry(import_comma2k19(real / COMMA, tmp_path / "one").path)
    assert m["utc_offset_ns"] == read_manifest(tmp_path / "one" / ref.vehicle_id / "b0c9d2329ad1606b_2018-08-02--08-34-47_seg40")["utc_offset_ns"]
    assert len(t["t_ns"]) == 2 * one.num_rows


def test_comma2k19_deterministic(real: Path, tmp_path: Path) -> None:
    a = import_comma2k19(real / COMMA, tmp_path / "a")
    b = import_comma2k19(real / COMMA, tmp_path / "b")
    assert _snapshot(a.path) == _snapshot(b.path)


def test_comma2k19_bad_inputs(real: Path, tmp_path: Path) -> None:
    seg = tmp_path / "b0c9d2329ad1606b_2018-08-02--08-34-47_seg40"
    shutil.copytree(real / COMMA / "processed_log", seg / "processed_log")
    (seg / "processed_log/CAN/speed/value").unlink()
    with pytest.raises(SourceImportError) as e:
        import_comma2k19(seg, tmp_path / "landing")
    assert e.value.path == str(seg / "processed_log/CAN/speed/value")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceImportError, match="segment folder"):
        import_comma2k19(empty, tmp_path / "landing", vehicle_id="x")
    # a video whose frame count does not match frame_times
    route = _fabricate_route(real, tmp_path / "src")
    _hevc(route / "41" / "video.hevc", N_FRAMES - 2)
    with pytest.raises(SourceImportError) as e:
        import_comma2k19(route, tmp_path / "landing")
    assert e.value.path == str(route / "41" / "video.hevc")


# --------------------------------------------------------------------------------------
# MDF4 (CANedge) + DBC
# --------------------------------------------------------------------------------------
def test_mdf_canedge(real: Path, tmp_path: Path) -> None:
    d = real / CSS
    ref = import_mdf(d / "00000001-63BEF5CD.MF4", d / "gnss.dbc", tmp_path, vehicle_id="2F6913DB")
    m = read_manifest(ref.path)
    assert m["utc_offset_ns"] == int(dt.datetime(2023, 1, 11, 17, 41, 55, tzinfo=dt.UTC).timestamp()) * 10**9
    assert re.fullmatch("2F6913DB_20230111T174155Z_[0-9a-f]{6}", ref.drive_id) and m["cameras"] == [] and m["source"] == "mdf4"
    t = _telemetry(ref.path)
    d_ = t.to_pydict()
    sp = np.array(d_["speed_mps"])
    assert sp.min() >= 0.0 and 7.3 < sp.max() <= 7.45
    lat = np.array(d_["lat_deg"], dtype=float)
    lon = np.array(d_["lon_deg"], dtype=float)
    assert np.all(np.abs(lat - 56.07) < 0.01) and np.all(np.abs(lon - 10.16) < 0.01)
    # 50 Hz over the speed samples (relative time ~14..184 s)
    assert np.all(np.diff(d_["t_ns"]) == 20_000_000)
    assert 14.0 < d_["t_ns"][0] / 1e9 < 15.0 and 183.0 < d_["t_ns"][-1] / 1e9 < 185.0
    yaw = np.array([x for x in d_["yaw_rate_radps"] if x is not None])
    assert np.abs(yaw).max() < 1.0  # deg/s → rad/s
    hd = np.array([x for x in d_["heading_rad"] if x is not None])
    assert hd.min() >= 0.0 and hd.max() < 2 * math.pi


def test_mdf_user_mapping_and_video(real: Path, tmp_path: Path) -> None:
    d = real / CSS
    mapping = tmp_path / "map.yaml"
    mapping.write_text("speed_mps: {signal: gnss_speed.Speed, scale: 3.6}\nlat_deg: gnss_pos.Latitude\n")
    ref = import_mdf(d / "00000001-63BEF5CD.MF4", d / "gnss.dbc", tmp_path, vehicle_id="2F6913DB",
                     drive_id="mapped", mapping=mapping, video=[real / UDACITY])
    m = read_manifest(ref.path)
    assert m["cameras"][0]["name"] == "front" and m["cameras"][0]["files"][0]["start_ns"] == 0
    d_ = _telemetry(ref.path).to_pydict()
    assert 26.5 < max(d_["speed_mps"]) <= 7.449 * 3.6 + 1e-9  # scaled as asked (km/h here)
    assert set(d_["lon_deg"]) == {None}


def test_mdf_bad_inputs(real: Path, tmp_path: Path) -> None:
    d = real / CSS
    text = tmp_path / "fake.MF4"
    text.write_text("not an MDF file at all\n")
    with pytest.raises(SourceImportError) as e:
        import_mdf(text, d / "gnss.dbc", tmp_path / "landing", vehicle_id="v")
    assert e.value.path == str(text)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("speed_mps: {signal: gnss_speed.NoSuchSignal}\n")
    with pytest.raises(SourceImportError, match="NoSuchSignal") as e:
        import_mdf(d / "00000001-63BEF5CD.MF4", d / "gnss.dbc", tmp_path / "landing", vehicle_id="v", mapping=mapping)
    assert e.value.path == str(mapping)
    mapping.write_text("lat_deg: gnss_pos.Latitude\n")
    with pytest.raises(SourceImportError, match="speed"):
        import_mdf(d / "00000001-63BEF5CD.MF4", d / "gnss.dbc", tmp_path / "landing", vehicle_id="v", mapping=mapping)
    assert not (tmp_path / "landing").exists()  # nothing landed for bad input


# --------------------------------------------------------------------------------------
# candump -L
# --------------------------------------------------------------------------------------
T0 = 1673459000.0


def _candump(real: Path, tmp: Path) -> Path:
    """4 s of frames: speed ramps 0→8 m/s at 10 Hz, position at 5 Hz, IMU at 20 Hz, plus foreign ids."""
    import cantools

    db = cantools.database.load_file(str(real / CSS / "gnss.dbc"), strict=False)
    speed = db.get_message_by_frame_id(0x7)
    pos = db.get_message_by_frame_id(0x3)
    imu = db.get_message_by_frame_id(0x9)
    frames = []
    for i in range(41):
        t = T0 + 0.1 * i
        frames.append((t, 0x7, speed.encode({"SpeedValid": 1, "Speed": 0.2 * i, "SpeedAccuracy": 0.1})))
        frames.append((t + 0.001, 0x123, bytes([i, 0, 0, 0])))  # not in the DBC: ignored
    for i in range(21):
        t = T0 + 0.2 * i + 0.003
        frames.append((t, 0x3, pos.encode({"PositionValid": 1, "Latitude": 56.07 + 1e-5 * i, "Longitude": 10.16, "PositionAccuracy": 2})))
    for i in range(81):
        t = T0 + 0.05 * i + 0.002
        frames.append((t, 0x9, imu.encode({"ImuValid": 1, "AccelerationX": 1.0, "AccelerationY": -0.5, "AccelerationZ": 9.875,
                                           "AngularRateX": 0, "AngularRateY": 0, "AngularRateZ": 10.0})))
    frames.sort()
    p = tmp / "drive.log"
    p.write_text("".join(f"({t:.6f}) can0 {a:03X}#{d.hex().upper()}\n" for t, a, d in frames), encoding="ascii")
    return p


MAPPING = """\
speed_mps: {signal: "gnss_speed.Speed", scale: 1.0}
lat_deg: gnss_pos.Latitude
lon_deg: gnss_pos.Longitude
accel_lon_mps2: {signal: gnss_imu.AccelerationX}
yaw_rate_radps: {signal: gnss_imu.AngularRateZ, scale: 0.017453292519943295}
"""


def test_candump(real: Path, tmp_path: Path) -> None:
    log = _candump(real, tmp_path)
    mapping = tmp_path / "map.yaml"
    mapping.write_text(MAPPING)
    ref = import_candump(log, real / CSS / "gnss.dbc", mapping, tmp_path / "landing", vehicle_id="car-7", video=[real / UDACITY])
    m = read_manifest(ref.path)
    assert m["utc_offset_ns"] == int(T0) * 10**9 and m["source"] == "candump"
    assert re.fullmatch("car-7_20230111T174320Z_[0-9a-f]{6}", ref.drive_id)
    assert m["cameras"][0]["files"][0] == {"path": "cameras/front/000.mp4", "start_ns": 0, "frame_times": None}
    d = _telemetry(ref.path).to_pydict()
    t = np.array(d["t_ns"])
    assert t[0] == 0 and t[-1] == 4 * 10**9 and np.all(np.diff(t) == 20_000_000)  # 50 Hz, 201 rows
    # speed ramp 2 m/s per s: linear interpolation reproduces it (DBC resolution 0.001)
    assert np.allclose(d["speed_mps"], 2.0 * t / 1e9, atol=0.002)
    assert np.allclose([x for x in d["accel_lon_mps2"] if x is not None], 1.0)
    assert np.allclose([x for x in d["yaw_rate_radps"] if x is not None], math.radians(10.0))
    lat = [x for x in d["lat_deg"] if x is not None]
    assert abs(lat[0] - 56.07) < 1e-6 and d["lon_deg"][-1] == pytest.approx(10.16, abs=1e-6)
    assert d["lat_deg"][0] is None  # before the first position frame (3 ms in): null, not extrapolated


def test_candump_start_utc_and_determinism(real: Path, tmp_path: Path) -> None:
    log = _candump(real, tmp_path)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("speed_mps: gnss_speed.Speed\n")
    start = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
    a = import_candump(log, real / CSS / "gnss.dbc", mapping, tmp_path / "a", vehicle_id="car-7", start_utc=start, rate_hz=10.0)
    b = import_candump(log, real / CSS / "gnss.dbc", mapping, tmp_path / "b", vehicle_id="car-7", start_utc=start, rate_hz=10.0)
    assert read_manifest(a.path)["utc_offset_ns"] == int(start.timestamp()) * 10**9
    assert _telemetry(a.path).num_rows == 41
    assert _snapshot(a.path) == _snapshot(b.path)


def test_candump_bad_inputs(real: Path, tmp_path: Path) -> None:
    dbc = real / CSS / "gnss.dbc"
    mapping = tmp_path / "map.yaml"
    mapping.write_text(MAPPING)
    text = tmp_path / "notes.log"
    text.write_text("hello\nworld\n")
    with pytest.raises(SourceImportError) as e:
        import_candump(text, dbc, mapping, tmp_path / "landing", vehicle_id="v")
    assert e.value.path == str(text)
    log = _candump(real, tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("speed_mps: {signal: gnss_speed.Velocity}\n")
    with pytest.raises(SourceImportError, match="gnss_speed.Velocity") as e:
        import_candump(log, dbc, bad, tmp_path / "landing", vehicle_id="v")
    assert e.value.path == str(bad)
    bad.write_text("speed: {signal: gnss_speed.Speed}\n")
    with pytest.raises(SourceImportError, match="canonical"):
        import_candump(log, dbc, bad, tmp_path / "landing", vehicle_id="v")
    bad.write_text("speed_mps: {signal: NoMessage.Speed}\n")
    with pytest.raises(SourceImportError, match="NoMessage"):
        import_candump(log, dbc, bad, tmp_path / "landing", vehicle_id="v")
    # a log with no frame carrying the mapped speed message
    other = tmp_path / "other.log"
    other.write_text(f"({T0:.6f}) can0 123#00\n({T0 + 0.1:.6f}) can0 123#01\n")
    with pytest.raises(SourceImportError, match="speed") as e:
        import_candump(other, dbc, mapping, tmp_path / "landing", vehicle_id="v")
    assert e.value.path == str(other)
    baddbc = tmp_path / "bad.dbc"
    baddbc.write_text("this is not a dbc {{{\n")
    with pytest.raises(SourceImportError) as e:
        import_candump(log, baddbc, mapping, tmp_path / "landing", vehicle_id="v")
    assert e.value.path == str(baddbc)


TINY_DBC = """\
VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 256 VehicleStatus: 8 ECU
 SG_ SpeedKmh : 0|16@1+ (0.01,0) [0|655.35] "km/h" Vector__XXX
 SG_ SteeringAngle : 16|16@1- (0.1,0) [-3276.8|3276.7] "deg" Vector__XXX
 SG_ Gear : 32|4@1- (1,0) [-1|7] "" Vector__XXX
 SG_ AssistEngaged : 36|1@1+ (1,0) [0|1] "" Vector__XXX

VAL_ 256 AssistEngaged 0 "off" 1 "on" ;
"""


def test_candump_tiny_dbc_kmh_and_discrete(tmp_path: Path) -> None:
    import cantools

    dbc = tmp_path / "tiny.dbc"
    dbc.write_text(TINY_DBC)
    msg = cantools.database.load_file(str(dbc)).get_message_by_name("VehicleStatus")
    lines = []
    for i in range(21):  # 2 s at 10 Hz, boot-relative times (not UNIX time)
        gear = 1 if i < 10 else 2
        data = msg.encode({"SpeedKmh": 36.0 + 3.6 * i, "SteeringAngle": -10.0, "Gear": gear, "AssistEngaged": i >= 15})
        lines.append(f"({100.0 + 0.1 * i:.6f}) vcan0 {msg.frame_id:03X}#{data.hex().upper()}\n")
    log = tmp_path / "boot.log"
    log.write_text("".join(lines))
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "speed_mps: {signal: VehicleStatus.SpeedKmh, scale: 0.2777777777777778}\n"
        "steering_angle_rad: {signal: VehicleStatus.SteeringAngle, scale: 0.017453292519943295}\n"
        "gear: VehicleStatus.Gear\n"
        "driver_assist_engaged: VehicleStatus.AssistEngaged\n"
    )
    with pytest.raises(SourceImportError, match="start_utc") as e:
        import_candump(log, dbc, mapping, tmp_path / "landing", vehicle_id="car-9")
    assert e.value.path == str(log)
    start = dt.datetime(2025, 3, 1, 8, 0, 0, tzinfo=dt.timezone.utc)
    ref = import_candump(log, dbc, mapping, tmp_path / "landing", vehicle_id="car-9", start_utc=start, rate_hz=20.0)
    assert re.fullmatch("car-9_20250301T080000Z_[0-9a-f]{6}", ref.drive_id)
    m = read_manifest(ref.path)
    assert m["utc_offset_ns"] == int(start.timestamp()) * 10**9 and m["cameras"] == []
    d = _telemetry(ref.path).to_pydict()
    t = np.array(d["t_ns"]) / 1e9
    assert len(t) == 41 and t[0] == 0.0 and t[-1] == pytest.approx(2.0)
    assert np.allclose(d["speed_mps"], 10.0 + 10.0 * t, atol=0.003)  # km/h → m/s via scale
    assert np.allclose(d["steering_angle_rad"], math.radians(-10.0))
    # discrete signals: nearest sample, never a blend
    assert set(d["gear"]) == {1, 2} and d["gear"][:19] == [1] * 19 and d["gear"][-20:] == [2] * 20
    assert d["driver_assist_engaged"][:29] == [False] * 29 and d["driver_assist_engaged"][-10:] == [True] * 10
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="cannot read CAN mapping file: No such file") as e:
        import_candump(log, dbc, missing, tmp_path / "landing2", vehicle_id="car-9", start_utc=start)
    assert e.value.path == str(missing)
