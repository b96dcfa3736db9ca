"""Validation of landing drives: each bad input gets its own quarantine reason; good drives beside it
still validate; an incomplete upload is skipped, not quarantined."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fleetcore.errors import DriveError, DriveIncomplete
from fleetcore.landing.drives import MANIFEST, UPLOAD_COMPLETE, list_drives, read_manifest
from fleetcore.ingest.report import validate_landing
from fleetcore.ingest.validate import validate_drive
from conftest import encode_testsrc, telemetry_table


def _edit_manifest(drive: Path, fn) -> None:
    m = json.loads((drive / MANIFEST).read_text())
    fn(m)
    (drive / MANIFEST).write_text(json.dumps(m))


def _replace_video(drive: Path, data: bytes, cam: str = "front") -> None:
    (drive / "cameras" / cam / "000.mp4").write_bytes(data)


def test_good_drive_validates(tmp_path, make_drive):
    d = make_drive(tmp_path)
    vd = validate_drive(d)
    assert [c.name for c in vd.cameras] == ["front", "left"]
    assert vd.cameras[0].frames == 30
    assert vd.cameras[0].infos[0].codec == "h264"
    assert (vd.cameras[0].infos[0].width, vd.cameras[0].infos[0].height) == (160, 120)
    assert vd.telemetry_rows == 150
    assert vd.frame_index.num_rows == 60
    assert vd.date == "2025-11-20"
    assert set(vd.source_digests) == {"cameras/front/000.mp4", "cameras/left/000.mp4", "telemetry.parquet"}
    assert vd.drive_index_row()["video_seconds"] == pytest.approx(6.0, abs=0.3)


def _truncate(drive: Path) -> None:
    p = drive / "cameras" / "front" / "000.mp4"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _text(drive: Path) -> None:
    _replace_video(drive, b"this is not a video, just some text\n" * 20)


def _missing(drive: Path) -> None:
    (drive / "cameras" / "front" / "000.mp4").unlink()


def _escape_dotdot(drive: Path) -> None:
    _edit_manifest(drive, lambda m: m["cameras"][0]["files"][0].update(path="../../../etc/passwd"))


def _escape_abs(drive: Path) -> None:
    _edit_manifest(drive, lambda m: m["cameras"][0]["files"][0].update(path="/etc/passwd"))


def _escape_symlink(drive: Path) -> None:
    p = drive / "cameras" / "front" / "000.mp4"
    outside = drive.parent.parent / "outside.mp4"
    shutil.copyfile(p, outside)
    p.unlink()
    os.symlink(outside, p)


def _tel(table: pa.Table):
    def f(drive: Path) -> None:
        import pyarrow.parquet as pq

        pq.write_table(table, drive / "telemetry.parquet")

    return f


def _tel_with(**changes):
    t = telemetry_table(5_000_000_000, 3.0)
    cols = {n: t.column(n).to_numpy().copy() for n in t.column_names}
    for k, fn in changes.items():
        fn(cols[k])
    return _tel(pa.table({k: pa.array(v) for k, v in cols.items()}))


def _nan(a):
    a[10] = np.nan


def _swap(a):
    a[20], a[21] = a[21], a[20]


def _dup(a):
    a[31] = a[30]


def _bump31(a):
    a[31] = a[31] + 1.0  # same timestamp as row 30, different value: a conflict, not a repeat


def _absurd(a):
    a[40] = 1e9


def _unsupported(drive: Path) -> None:
    """A codec FFmpeg has no decoder for: the MP4 sample entry's fourcc renamed ('avc1' -> 'qqq1')."""
    p = drive / "cameras" / "front" / "000.mp4"
    p.write_bytes(p.read_bytes().replace(b"avc1", b"qqq1"))


def test_any_codec_ffmpeg_decodes_validates(tmp_path, make_drive):
    """MPEG-4 Part 2 is no H.264/HEVC, but PyAV decodes it: the drive validates."""
    d = make_drive(tmp_path)
    p = d / "cameras" / "front" / "000.mp4"
    p.unlink()
    encode_testsrc(p, codec="mpeg4")
    vd = validate_drive(d)
    assert vd.cameras[0].infos[0].codec == "mpeg4" and vd.cameras[0].frames == 30
    assert set(vd.frame_index.column("seek").to_pylist()) == {"index"}


BAD = [
    ("zero_byte_video", lambda d: _replace_video(d, b""), "video_empty", "cameras/front/000.mp4"),
    ("truncated_mp4", _truncate, "video_truncated", "cameras/front/000.mp4"),
    ("text_named_mp4", _text, "video_not_media", "cameras/front/000.mp4"),
    ("unsupported_codec", _unsupported, "video_unsupported_codec", "cameras/front/000.mp4"),
    ("missing_camera_file", _missing, "camera_file_missing", "cameras/front/000.mp4"),
    ("path_dotdot", _escape_dotdot, "path_escape", "../../../etc/passwd"),
    ("path_absolute", _escape_abs, "path_escape", "/etc/passwd"),
    ("path_symlink", _escape_symlink, "path_escape", "cameras/front/000.mp4"),
    ("telemetry_nan", _tel_with(speed_mps=_nan), "telemetry_nan", "telemetry.parquet"),
    ("telemetry_out_of_order", _tel_with(t_ns=_swap), "telemetry_unsorted", "telemetry.parquet"),
    ("telemetry_duplicate_ts", _tel_with(t_ns=_dup, speed_mps=_bump31), "telemetry_duplicate_timestamp", "telemetry.parquet"),
    ("telemetry_absurd_speed", _tel_with(speed_mps=_absurd), "telemetry_out_of_range", "telemetry.parquet"),
    ("telemetry_no_overlap", _tel(telemetry_table(500_000_000_000, 3.0)), "telemetry_no_overlap", "telemetry.parquet"),
    ("manifest_not_json", lambda d: (d / MANIFEST).write_text("{not json"), "manifest_invalid", MANIFEST),
    ("manifest_missing_field", lambda d: _edit_manifest(d, lambda m: m.pop("utc_offset_ns")), "manifest_invalid", MANIFEST),
]


@pytest.mark.parametrize("name, plant, code, file", BAD, ids=[b[0] for b in BAD])
def test_each_bad_input_has_its_own_reason(tmp_path, make_drive, name, plant, code, file):
    d = make_drive(tmp_path / "landing")
    plant(d)
    with pytest.raises(DriveError) as ei:
        validate_drive(d)
    assert ei.value.code == code, str(ei.value)
    assert ei.value.file == file
    assert ei.value.message  # says what is wrong
    assert code in str(ei.value)


def test_telemetry_error_names_column_and_row(tmp_path, make_drive):
    d = make_drive(tmp_path)
    _tel_with(speed_mps=_absurd)(d)
    with pytest.raises(DriveError, match=r"speed_mps.*row 40.*<= 120"):
        validate_drive(d)


def test_exact_duplicate_rows_are_dropped_and_counted(tmp_path, make_drive):
    t = telemetry_table(5_000_000_000, 3.0)
    t = pa.concat_tables([t.slice(0, 11), t.slice(10)])  # row 10 twice, identical
    d = make_drive(tmp_path, telemetry=t)
    vd = validate_drive(d)
    assert vd.duplicates_dropped == 1
    assert vd.telemetry_rows == 150
    assert any("duplicate" in w for w in vd.warnings)


def test_incomplete_upload_is_skipped_not_quarantined(tmp_path, make_drive):
    d = make_drive(tmp_path, finish=False)
    assert not (d / UPLOAD_COMPLETE).exists()
    with pytest.raises(DriveIncomplete):
        validate_drive(d)
    assert list_drives(tmp_path) == []
    rep = validate_landing(tmp_path)
    assert rep.incomplete == ["veh-a/drive-1"] and not rep.quarantined


def test_video_only_and_telemetry_only_drives(tmp_path, make_drive):
    v = validate_drive(make_drive(tmp_path, "veh-a", "video-only", telemetry=None))
    assert v.telemetry is None and v.cameras
    t = validate_drive(make_drive(tmp_path, "veh-a", "tel-only", cameras=()))
    assert t.cameras == [] and t.telemetry_rows == 150


def test_bad_drives_never_stop_the_good_ones(tmp_path, make_drive):
    root = tmp_path / "landing"
    for i, (name, plant, code, _file) in enumerate(BAD):
        plant(make_drive(root, "veh-bad", f"bad-{i:02d}"))
    for i in range(3):
        make_drive(root, "veh-good", f"good-{i}")
    make_drive(root, "veh-good", "uploading", finish=False)
    rep = validate_landing(root)
    s = rep.summary()
    assert s["drives_valid"] == 3
    assert s["drives_quarantined"] == len(BAD)
    assert s["drives_incomplete"] == 1
    got = {q["drive_id"]: q["code"] for q in rep.quarantined}
    assert got == {f"bad-{i:02d}": code for i, (_n, _p, code, _f) in enumerate(BAD)}


def test_manifest_roundtrip_and_frame_times_check(tmp_path, make_drive):
    d = make_drive(tmp_path)
    m = read_manifest(d)
    assert m["cameras"][0]["files"][0]["start_ns"] == 5_000_000_000


def test_raw_stream_with_wrong_frame_times_length(tmp_path, make_drive):
    d = make_drive(tmp_path)
    raw = encode_testsrc(d / "cameras" / "front" / "000.h264", extra={"f": "h264"})
    np.save(d / "cameras" / "front" / "000.frametimes.npy", np.arange(7, dtype=np.int64))
    _edit_manifest(d, lambda m: m["cameras"][0].update(files=[{"path": "cameras/front/000.h264", "start_ns": None, "frame_times": "cameras/front/000.frametimes.npy"}]))
    assert raw.exists()
    with pytest.raises(DriveError) as ei:
        validate_drive(d)
    assert ei.value.code == "frame_times_invalid"
    np.save(d / "cameras" / "front" / "000.frametimes.npy", 5_000_000_000 + np.arange(30, dtype=np.int64) * 100_000_000)
    vd = validate_drive(d)
    assert vd.cameras[0].frames == 30


def test_accepted_but_suspicious_inputs_are_reported(tmp_path, make_drive):
    """Validation accepts these, but says so (ValidatedDrive.warnings: `fleet validate`, the curate
    job's log): HEVC content declared as H.264, a camera covering 3 s of a 20 s drive, segment files
    of one camera that overlap in time."""
    from fleetcore.landing.drives import DriveWriter

    hevc = encode_testsrc(tmp_path / "h.mp4", codec="libx265", extra={"x265-params": "log-level=error"})
    h264 = encode_testsrc(tmp_path / "a.mp4")
    w = DriveWriter(tmp_path / "landing", "veh-w", "drive-w")
    shutil.copyfile(hevc, w.file("cameras/front/000.mp4"))
    shutil.copyfile(h264, w.file("cameras/left/000.mp4"))
    shutil.copyfile(h264, w.file("cameras/left/001.mp4"))
    import pyarrow.parquet as pq

    pq.write_table(telemetry_table(5_000_000_000, 20.0), w.file("telemetry.parquet"))
    w.finish({"utc_offset_ns": 1_763_625_600_000_000_000, "source": "test", "telemetry": {"path": "telemetry.parquet", "format": "parquet"},
              "cameras": [
                  {"name": "front", "codec": "h264", "files": [{"path": "cameras/front/000.mp4", "start_ns": 5_000_000_000, "frame_times": None}]},
                  {"name": "left", "codec": "h264", "files": [
                      {"path": "cameras/left/000.mp4", "start_ns": 5_000_000_000, "frame_times": None},
                      {"path": "cameras/left/001.mp4", "start_ns": 6_500_000_000, "frame_times": None}]}]})
    vd = validate_drive(w.path)
    text = "\n".join(vd.warnings)
    assert "camera 'front': cameras/front/000.mp4 is declared h264 but its stream is hevc" in text
    assert "camera 'front' covers 2.9 s of the drive's 20.0 s" in text
    assert "segment files cameras/left/000.mp4 and cameras/left/001.mp4 overlap by 1.4" in text
    # a plain drive has none of them
    good = validate_drive(make_drive(tmp_path / "ok", "veh-ok", "drive-ok"))
    assert not [x for x in good.warnings if "declared" in x or "overlap" in x or "covers" in x]


def test_implausible_telemetry_jumps_are_reported_with_time_and_signal(tmp_path, make_drive):
    tel = telemetry_table(5_000_000_000, 3.0)
    speed = tel.column("speed_mps").to_numpy().copy()
    speed[:50] = 6.0
    speed[50:] = 32.0  # 6 -> 32 m/s between two rows 20 ms apart, at 1.00 s
    lat = tel.column("lat_deg").to_numpy().copy()
    lat[100:] += 0.05  # ~5.6 km jump at 2.00 s
    tel = tel.set_column(tel.column_names.index("speed_mps"), "speed_mps", pa.array(speed))
    tel = tel.set_column(tel.column_names.index("lat_deg"), "lat_deg", pa.array(lat))
    vd = validate_drive(make_drive(tmp_path, "veh-j", "drive-j", telemetry=tel))
    text = "\n".join(vd.warnings)
    assert "telemetry.parquet: speed_mps jumps 6.0 -> 32.0 m/s in 0.02 s at 1.00 s" in text
    assert "telemetry.parquet: position jumps 5.56 km in 0.02 s at 2.00 s" in text
    plain = validate_drive(make_drive(tmp_path / "p", "veh-p", "drive-p"))
    assert not [w for w in plain.warnings if "jumps" in w]


def test_timestamps_going_back_in_file_order_are_reported():
    """A recorder whose clock jumps back mid-file (containers keep such timestamps; the frame
    index sorts by them): in file order (byte offsets) the step back shows and is reported."""
    from fleetcore.ingest.validate import CameraCheck, drive_warnings
    from fleetcore.video.probe import VideoInfo

    n = 40
    pts = np.r_[np.arange(20), np.arange(20) + 5] * 100_000_000  # frame 20 is 1.4 s earlier than frame 19
    order = np.argsort(pts, kind="stable")  # the index is in presentation order
    idx = pa.table({"drive_id": ["d"] * n, "camera": ["front"] * n, "file_index": pa.array([0] * n, pa.int32()),
                    "frame_index": pa.array(np.arange(n), pa.int32()), "pts_ns": pa.array(pts[order], pa.int64()),
                    "is_keyframe": [True] * n, "byte_offset": pa.array((order * 1000).astype(np.int64)),
                    "packet_size": pa.array([1000] * n, pa.int32()), "seek": ["index"] * n})
    info = VideoInfo(path="f.mp4", container="mp4", codec="h264", width=16, height=16, fps=10.0, duration_s=4.0, frame_count=n,
                     keyframe_pts_ns=(), stream_index=0, vfr=False)
    cam = CameraCheck(name="front", files=["cameras/front/000.mp4"], infos=[info], start_ns=0, end_ns=int(pts.max()), frames=n)
    m = {"cameras": [{"name": "front", "codec": "h264"}]}
    text = "\n".join(drive_warnings(m, [cam], idx, 0, int(pts.max())))
    assert "timestamps going back in time by up to 1.40 s (1 time(s), in file order)" in text
