"""Tests of the synthetic fleet simulator on real encoded video and real Parquet."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from fleetcore.landing.drives import GROUND_TRUTH, MANIFEST, UPLOAD_COMPLETE, list_drives, read_manifest
from fleetcore.simulate import decode_marker, marker_value, plan_fleet, simulate_drive, simulate_fleet
from fleetcore.simulate.render import draw_marker
from fleetcore.simulate.scenario import (
    EVENT_TYPES,
    HARD_BRAKE_MPS2,
    HARSH_ACCEL_MPS2,
    HIGH_SPEED_MPS,
    SHADOW_DISAGREE_RAD,
    SHARP_TURN_LAT_MPS2,
    classify_time_of_day,
    solar_elevation_deg,
)
from schemas import TELEMETRY

TINY = dict(cameras=["front", "rear"], width=320, height=180, fps=10.0, duration_s=10.0, telemetry_hz=50.0)


def _sim(root: Path, **kw: object):
    args = dict(TINY, seed=3, segment_s=4.0, events=["hard_brake"], effects=["camera_blurred"], pedestrians=True)
    args.update(kw)
    return simulate_drive(root, "veh-007", **args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("landing")
    ref = _sim(root)
    return ref


def _digests(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_layout_and_manifest(drive) -> None:
    d = drive.path
    assert list_drives(drive.root) == [drive]
    m = read_manifest(d)
    assert m["source"] == "simulator" and m["vehicle_id"] == "veh-007" and m["drive_id"] == drive.drive_id
    assert drive.drive_id.startswith("veh-007-") and "." not in drive.drive_id
    assert [c["name"] for c in m["cameras"]] == ["front", "rear"]
    files = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}
    expected = {MANIFEST, UPLOAD_COMPLETE, GROUND_TRUTH, "telemetry.parquet"}
    expected |= {f"cameras/{c}/{k:03d}.mp4" for c in ("front", "rear") for k in range(3)}
    assert files == expected  # no temp files left behind
    # the upload-complete marker is written last
    marker_mtime = (d / UPLOAD_COMPLETE).stat().st_mtime_ns
    assert all((d / f).stat().st_mtime_ns <= marker_mtime for f in files)
    # cameras are not perfectly in sync, all start after telemetry
    tel = pq.read_table(d / "telemetry.parquet")
    t0 = tel.column("t_ns")[0].as_py()
    starts = [c["files"][0]["start_ns"] for c in m["cameras"]]
    assert all(s > t0 for s in starts)
    assert t0 > 10_000_000_000  # vehicle clock does not start at 0


def test_segments_decode_and_are_consecutive(drive) -> None:
    m = read_manifest(drive.path)
    period = 1e9 / TINY["fps"]
    for cam in m["cameras"]:
        segs = cam["files"]
        assert [Path(f["path"]).name for f in segs] == ["000.mp4", "001.mp4", "002.mp4"]
        expect_counts = [40, 40, 20]
        for k, f in enumerate(segs):
            with av.open(str(drive.path / f["path"])) as c:
                s = c.streams.video[0]
                assert s.codec_context.name == "h264"
                frames = list(c.decode(s))
            assert len(frames) == expect_counts[k]
            assert (frames[0].width, frames[0].height) == (320, 180)
            assert frames[0].pts == 0 and frames[0].key_frame
            assert frames[0].format.name == "yuv420p"
            if k:
                assert f["start_ns"] == segs[0]["start_ns"] + round(sum(expect_counts[:k]) * period)


def test_gop_is_one_second(drive) -> None:
    m = read_manifest(drive.path)
    f = m["cameras"][0]["files"][0]
    with av.open(str(drive.path / f["path"])) as c:
        keys = [i for i, p in enumerate(c.demux(video=0)) if p.size and p.is_keyframe]
    assert keys == [0, 10, 20, 30]


def test_frame_marker_matches_vehicle_clock(drive) -> None:
    m = read_manifest(drive.path)
    for cam in m["cameras"]:
        for f in cam["files"][:2]:
            with av.open(str(drive.path / f["path"])) as c:
                s = c.streams.video[0]
                for fr in c.decode(s):
                    t_ns = f["start_ns"] + round(fr.pts * s.time_base * 1_000_000_000)
                    img = fr.to_ndarray(format="bgr24")
                    assert decode_marker(img) == marker_value(t_ns)
    # survives a resize to 640 wide and JPEG at quality 70
    big = cv2.resize(img, (640, 360), interpolation=cv2.INTER_LINEAR)
    ok, jpg = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    assert decode_marker(cv2.imdecode(jpg, cv2.IMREAD_COLOR)) == marker_value(t_ns)


def test_marker_roundtrip_values() -> None:
    for v in (0, 1, 0x8000, 0xFFFF, 12345):
        img = np.full((360, 640, 3), 127, np.uint8)
        draw_marker(img, v)
        assert decode_marker(img) == v
    assert marker_value(655_360_000_000 + 20_000_000) == 2  # wraps at 2**16 x 10 ms
    with pytest.raises(ValueError, match="ambiguous"):
        decode_marker(np.full((180, 320, 3), 127, np.uint8))


def test_telemetry_and_events(drive) -> None:
    tel = pq.read_table(drive.path / "telemetry.parquet")
    TELEMETRY.validate(tel)
    assert tel.schema.names == TELEMETRY.column_names
    t = np.asarray(tel.column("t_ns"))
    assert set(np.diff(t).tolist()) <= {20_000_000}
    m = read_manifest(drive.path)
    for cam in m["cameras"]:  # telemetry covers the video
        last = cam["files"][-1]
        assert t[0] <= cam["files"][0]["start_ns"] and t[-1] >= last["start_ns"] + 2_000_000_000
    gt = json.loads((drive.path / GROUND_TRUTH).read_text())
    assert gt["vehicle_id"] == "veh-007" and gt["drive_id"] == drive.drive_id and gt["seed"] == 3
    assert gt["utc_offset_ns"] == m["utc_offset_ns"]
    (hb,) = [e for e in gt["events"] if e["type"] == "hard_brake"]
    acc = np.asarray(tel.column("accel_lon_mps2"))
    lat = np.asarray(tel.column("accel_lat_mps2"))
    v = np.asarray(tel.column("speed_mps"))
    inside = (t >= hb["start_ns"]) & (t <= hb["end_ns"])
    assert acc[inside].max() <= HARD_BRAKE_MPS2 and acc.min() <= HARD_BRAKE_MPS2
    assert hb["end_ns"] - hb["start_ns"] >= 500_000_000
    # brake pedal consistent with deceleration
    assert np.asarray(tel.column("brake"))[inside].min() > 0.5 and np.asarray(tel.column("throttle"))[inside].max() == 0
    outside = (t < hb["start_ns"] - 1_000_000_000) | (t > hb["end_ns"] + 1_000_000_000)
    assert np.abs(acc[outside]).max() < 2.0 and np.abs(lat[outside]).max() < 2.0
    assert v[outside].min() > 8.0 and v[outside].max() < 28.0


def test_ground_truth_conditions(drive) -> None:
    gt = json.loads((drive.path / GROUND_TRUTH).read_text())
    types = {c["type"] for c in gt["conditions"]}
    assert {"time_of_day", "camera_blurred", "pedestrians"} <= types
    (blur,) = [c for c in gt["conditions"] if c["type"] == "camera_blurred"]
    assert blur["camera"] in ("front", "rear") and 1_500_000_000 <= blur["end_ns"] - blur["start_ns"] <= 4_000_000_000
    for p in (c for c in gt["conditions"] if c["type"] == "pedestrians"):
        assert p["count"] >= 1 and p["camera"] in ("front", "rear") and p["end_ns"] > p["start_ns"]
    mans = gt["manoeuvres"]
    assert all(a["end_ns"] < b["start_ns"] for a, b in zip(mans, mans[1:]))
    assert "braking" in {x["value"] for x in mans}


def test_time_of_day_agrees_with_sun(drive) -> None:
    gt = json.loads((drive.path / GROUND_TRUTH).read_text())
    tel = pq.read_table(drive.path / "telemetry.parquet").to_pydict()
    (tod,) = [c for c in gt["conditions"] if c["type"] == "time_of_day"]
    lat = next(x for x in tel["lat_deg"] if x is not None)
    lon = next(x for x in tel["lon_deg"] if x is not None)
    for t in (tod["start_ns"], tod["end_ns"]):
        utc = dt.datetime.fromtimestamp((t + gt["utc_offset_ns"]) / 1e9, tz=dt.timezone.utc)
        assert utc.date() == dt.date(2026, 11, 20)
        assert classify_time_of_day(solar_elevation_deg(lat, lon, utc)) == tod["value"]


def test_same_seed_gives_identical_bytes(drive, tmp_path: Path) -> None:
    again = _sim(tmp_path)
    assert again.drive_id == drive.drive_id
    assert _digests(again.path) == _digests(drive.path)
    other = simulate_drive(tmp_path / "b", "veh-007", **dict(TINY, duration_s=6.0, seed=4, events=[], effects=[]))
    assert _digests(other.path) != _digests(drive.path)


# sha256 of the simulator's videos, recorded on the code before its ffmpeg calls moved to
# fleetcore.video.ffmpeg (ffmpeg-python); pinned for the imageio-ffmpeg binary below.
PINNED_FFMPEG = "n9.0.2-17-g2a571b6068-20260930"
PINNED_VIDEOS = {
    "fleet/veh-000/veh-000-20261120T095215Z/cameras/front/000.mp4": "956096623aa2e87445d4954bc04c89ca497283720f87f89d7a35d4e2ddfaf7f1",
    "fleet/veh-000/veh-000-20261120T095215Z/cameras/left/000.mp4": "7c867830d502f97b2561066b1f460692a6f8039d12f784abd29a09fb937277a7",
    "seg/veh-007/veh-007-20261120T003442Z/cameras/front/000.mp4": "bd40a34e376bccd6e5e5b1be6a29b79f1b503da50d6967508ab815ed5bc3e088",
    "seg/veh-007/veh-007-20261120T003442Z/cameras/front/001.mp4": "5b08e1a5217c52e41257fba9b24df6b31da679ee3d1836f4cfe154b085f29d45",
    "seg/veh-007/veh-007-20261120T003442Z/cameras/front/002.mp4": "f73adee61b70c9b7786e1ba1c0660c576fac26f237b217ca7a3a25664bdea086",
    "seg/veh-007/veh-007-20261120T003442Z/cameras/rear/000.mp4": "4d651f7ec63c720f6c19c6894c7799f325e54fc905cfabd277e2cb8a2ba259f4",
    "seg/veh-007/veh-007-20261120T003442Z/cameras/rear/001.mp4": "9a9e1c37b967f5a842bbc183be069ddebab2c5702ec712bf319b1fc7382c303d",
    "seg/veh-007/veh-007-20261120T003442Z/cameras/rear/002.mp4": "5de682bea0c9680fd421d384549daac9864d3389561cc318d1e5d5d83c6c8a75",
}


def test_videos_match_the_pinned_digests(tmp_path: Path) -> None:
    import imageio_ffmpeg

    if imageio_ffmpeg.get_ffmpeg_version() != PINNED_FFMPEG:
        pytest.skip(f"digests pinned for ffmpeg {PINNED_FFMPEG}, this is {imageio_ffmpeg.get_ffmpeg_version()}")
    simulate_fleet(tmp_path / "fleet", vehicles=1, drives_per_vehicle=1, cameras=2, width=320, height=180, fps=10.0,
                   duration_s=3.0, seed=11, workers=1)
    simulate_drive(tmp_path / "seg", "veh-007", cameras=["front", "rear"], width=320, height=180, fps=10.0,
                   duration_s=5.0, telemetry_hz=50.0, seed=3, segment_s=2.0)
    found = {str(p.relative_to(tmp_path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.rglob("*.mp4"))}
    assert found == PINNED_VIDEOS


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fleet_plan_covers_everything(seed: int) -> None:
    scs = plan_fleet(vehicles=3, drives_per_vehicle=2, duration_s=30.0, seed=seed)
    types = {e["type"] for sc in scs for e in sc.events}
    assert types == set(EVENT_TYPES)
    assert {sc.time_of_day for sc in scs} == {"day", "dusk", "night"}
    assert all(len(sc.events) >= 2 for sc in scs)
    for sc in scs:
        tel = sc.table.to_pydict()
        TELEMETRY.validate(sc.table)
        t = np.asarray(tel["t_ns"])
        acc, lat, v = (np.asarray(tel[k]) for k in ("accel_lon_mps2", "accel_lat_mps2", "speed_mps"))
        steer, shadow = np.asarray(tel["steering_angle_rad"]), np.asarray(tel["shadow_steering_angle_rad"])
        eng = np.asarray(tel["driver_assist_engaged"])
        ev = sorted(sc.events, key=lambda e: e["start_ns"])
        for a, b in zip(ev, ev[1:]):
            assert b["start_ns"] - a["end_ns"] >= 4_000_000_000
        for e in ev:
            ins = (t >= e["start_ns"]) & (t <= e["end_ns"])
            dur = (e["end_ns"] - e["start_ns"]) / 1e9
            k = e["type"]
            if k == "hard_brake":
                assert acc[ins].max() <= HARD_BRAKE_MPS2 and dur >= 0.5
            elif k == "harsh_acceleration":
                assert acc[ins].min() >= HARSH_ACCEL_MPS2 and dur >= 0.5
            elif k == "sharp_turn":
                assert np.abs(lat[ins]).min() >= SHARP_TURN_LAT_MPS2
            elif k.startswith("lane_change"):
                assert np.abs(lat[ins]).max() < 2.0 and 3.0 <= dur <= 5.0
                side = np.sign(np.mean(steer[ins][: ins.sum() // 2]))
                assert side == (1 if k.endswith("left") else -1)
            elif k == "stop_and_go":
                st = (t >= e["params"]["stop_start_ns"]) & (t <= e["params"]["stop_end_ns"])
                assert v[st].max() < 0.1 and e["params"]["stop_end_ns"] - e["params"]["stop_start_ns"] >= 2e9
                assert v[t == e["start_ns"]][0] > 8 and v[t == e["end_ns"]][0] > 8
            elif k == "high_speed":
                assert v[ins].min() > HIGH_SPEED_MPS and dur >= 3.0
            elif k == "disengagement":
                i = int(np.flatnonzero(t == e["start_ns"])[0])
                assert eng[i - 1] and not eng[i]
            elif k == "shadow_disagreement":
                assert np.abs(shadow - steer)[ins].min() > SHADOW_DISAGREE_RAD and dur >= 0.5
            elif k == "gps_glitch":
                la, lo = tel["lat_deg"], tel["lon_deg"]
                idx = np.flatnonzero(ins)
                if e["params"]["kind"] == "dropout":
                    assert all(la[i] is None and lo[i] is None for i in idx)
                else:
                    i0 = idx[0]
                    dn = (la[i0] - la[i0 - 1]) * math.pi / 180 * 6_371_000
                    de = (lo[i0] - lo[i0 - 1]) * math.pi / 180 * 6_371_000 * math.cos(math.radians(la[i0]))
                    assert math.hypot(dn, de) > 200
        # gentle driving away from the event windows
        quiet = np.ones(len(t), bool)
        for ph in sc.phases:
            if ph.kind != "gap":
                quiet[max(0, ph.i0 - 25) : ph.i1 + 25] = False
        assert np.abs(acc[quiet]).max() < 2.0 and np.abs(lat[quiet]).max() < 2.0
        assert v[quiet].min() > 8.0 and v[quiet].max() < 28.0
        assert np.abs(shadow - steer)[quiet].max() < 0.1
        falls = np.flatnonzero(eng[:-1] & ~eng[1:]) + 1
        assert sorted(t[falls].tolist()) == sorted(e["start_ns"] for e in ev if e["type"] == "disengagement")
        lat_ok = np.array([x is not None for x in tel["lat_deg"]])
        la = np.array([x if x is not None else np.nan for x in tel["lat_deg"]])
        jumps = np.abs(np.diff(la)) * 111_000
        glitchy = np.zeros(len(t), bool)
        for e in ev:
            if e["type"] == "gps_glitch":
                glitchy |= (t >= e["start_ns"] - 20_000_000) & (t <= e["end_ns"] + 20_000_000)
        assert np.nanmax(np.where(glitchy[1:] | ~lat_ok[1:] | ~lat_ok[:-1], 0, jumps)) < 5.0


@pytest.mark.slow
def test_simulate_fleet_tiny(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    refs = simulate_fleet(
        tmp_path, vehicles=2, drives_per_vehicle=1, cameras=2, width=320, height=180, fps=10.0, duration_s=8.0,
        seed=1, progress=lambda a, b: seen.append((a, b)), workers=2,
    )
    assert [r.vehicle_id for r in refs] == ["veh-000", "veh-001"]
    assert sorted(seen) == [(1, 2), (2, 2)]
    assert list_drives(tmp_path) == refs
    for r in refs:
        m = read_manifest(r.path)
        assert [c["name"] for c in m["cameras"]] == ["front", "left"]


def _frames_at(drive_dir: Path, manifest: dict, camera: str, t0: int, t1: int) -> list[np.ndarray]:
    out = []
    (cam,) = [c for c in manifest["cameras"] if c["name"] == camera]
    for f in cam["files"]:
        with av.open(str(drive_dir / f["path"])) as c:
            s = c.streams.video[0]
            for fr in c.decode(s):
                t = f["start_ns"] + round(fr.pts * s.time_base * 1_000_000_000)
                if t0 <= t <= t1:
                    out.append(fr.to_ndarray(format="bgr24"))
    return out


def _sharpness(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img[: int(img.shape[0] * 0.85)], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_blurred_camera_is_blurred(drive) -> None:
    m = read_manifest(drive.path)
    gt = json.loads((drive.path / GROUND_TRUTH).read_text())
    (blur,) = [c for c in gt["conditions"] if c["type"] == "camera_blurred"]
    inside = _frames_at(drive.path, m, blur["camera"], blur["start_ns"], blur["end_ns"])
    before = _frames_at(drive.path, m, blur["camera"], 0, blur["start_ns"] - 200_000_000)
    after = _frames_at(drive.path, m, blur["camera"], blur["end_ns"] + 200_000_000, 2**62)
    assert inside and (before or after)
    sharp_out = min(_sharpness(f) for f in before + after)
    assert max(_sharpness(f) for f in inside) < 0.5 * sharp_out


def test_blocked_camera_is_dark(tmp_path: Path) -> None:
    ref = simulate_drive(tmp_path, "veh-001", **dict(TINY, duration_s=6.0, seed=5, events=[], effects=["camera_blocked"], time_of_day="day"))
    m = read_manifest(ref.path)
    gt = json.loads((ref.path / GROUND_TRUTH).read_text())
    (blk,) = [c for c in gt["conditions"] if c["type"] == "camera_blocked"]
    inside = _frames_at(ref.path, m, blk["camera"], blk["start_ns"], blk["end_ns"])
    outside = _frames_at(ref.path, m, blk["camera"], 0, blk["start_ns"] - 1) + _frames_at(ref.path, m, blk["camera"], blk["end_ns"] + 1, 2**62)
    assert inside and outside
    dark = [float((cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) < 40).mean()) for f in inside]
    lit = [float((cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) < 40).mean()) for f in outside]
    assert min(dark) > 0.7 and max(lit) < 0.2
    assert gt["conditions"][0] == {"type": "time_of_day", "value": "day", "start_ns": gt["conditions"][0]["start_ns"], "end_ns": gt["conditions"][0]["end_ns"]}
