"""`fleet import mcap`: a real MCAP file written here with the mcap writers, imported, validated and curated.

The recording (ROS 2 CDR, 4 s): two cameras as ``foxglove_msgs/msg/CompressedVideo`` H.264 at 10 Hz (one
Annex-B access unit per message, encoded frame by frame with PyAV; camera B 50 ms after camera A), each
frame carrying its number as black/white blocks (``test_video.coded_frame``); ``sensor_msgs/msg/NavSatFix``
at 5 Hz and ``geometry_msgs/msg/TwistStamped`` at 20 Hz. A JSON-encoded ``foxglove.CompressedVideo`` file
and the error cases are written the same way.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fleetcore.errors import SourceImportError
from fleetcore.ingest.importers.mcap import camera_names, import_mcap
from fleetcore.ingest.validate import validate_drive
from test_video import coded_frame, read_code

W, H, FPS, SECONDS = 160, 96, 10, 4
N = FPS * SECONDS
PERIOD = 1_000_000_000 // FPS
T0 = 1_763_640_000_000_000_000  # 2025-11-20T12:00:00Z
B_OFFSET = 50_000_000
B_CODE = 100  # camera B's frame k shows B_CODE + k

TIME = "MSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n"
SEP = "=" * 80 + "\n"
HEADER = "MSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n"
VIDEO_DEF = "builtin_interfaces/Time timestamp\nstring frame_id\nuint8[] data\nstring format\n" + SEP + TIME
FIX_DEF = ("std_msgs/Header header\nsensor_msgs/NavSatStatus status\nfloat64 latitude\nfloat64 longitude\nfloat64 altitude\n"
           "float64[9] position_covariance\nuint8 position_covariance_type\n" + SEP + HEADER + SEP + TIME + SEP
           + "MSG: sensor_msgs/NavSatStatus\nint8 status\nuint16 service\n")
TWIST_DEF = ("std_msgs/Header header\ngeometry_msgs/Twist twist\n" + SEP + HEADER + SEP + TIME + SEP
             + "MSG: geometry_msgs/Twist\ngeometry_msgs/Vector3 linear\ngeometry_msgs/Vector3 angular\n" + SEP
             + "MSG: geometry_msgs/Vector3\nfloat64 x\nfloat64 y\nfloat64 z\n")
STRING_DEF = "string data\n"


def _stamp(t_ns: int) -> dict:
    return {"sec": t_ns // 1_000_000_000, "nanosec": t_ns % 1_000_000_000}


def h264_packets(codes: list[int], *, gop: int = 10) -> list[bytes]:
    """One Annex-B access unit per frame (SPS/PPS in front of every keyframe), no B-frames."""
    import av

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = W, H, "yuv420p"
    ctx.time_base = Fraction(1, FPS)
    ctx.framerate = Fraction(FPS, 1)
    ctx.gop_size = gop
    ctx.max_b_frames = 0
    ctx.options = {"preset": "veryfast", "tune": "zerolatency", "sc_threshold": "0", "keyint_min": str(gop)}
    out: list[bytes] = []
    for i, code in enumerate(codes):
        frame = av.VideoFrame.from_ndarray(coded_frame(code, W, H), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out.extend(bytes(p) for p in ctx.encode(frame))
    out.extend(bytes(p) for p in ctx.encode(None))
    assert len(out) == len(codes)
    return out


def write_ros2_mcap(path: Path, *, video_format: str = "h264", extra_string_topic: bool = False,
                    drop_leading: int = 0, chunk_size: int = 1024 * 1024) -> Path:
    from mcap_ros2.writer import Writer

    pkts_a = h264_packets(list(range(N)))
    pkts_b = h264_packets([B_CODE + k for k in range(N)])
    with open(path, "wb") as f:
        w = Writer(f, chunk_size=chunk_size)
        video = w.register_msgdef("foxglove_msgs/msg/CompressedVideo", VIDEO_DEF)
        fix = w.register_msgdef("sensor_msgs/msg/NavSatFix", FIX_DEF)
        twist = w.register_msgdef("geometry_msgs/msg/TwistStamped", TWIST_DEF)
        msgs: list[tuple[int, str, object, dict]] = []
        for k in range(drop_leading, N):
            for topic, pkts, off in (("/cam_front/compressed", pkts_a, 0), ("/cam_rear/video", pkts_b, B_OFFSET)):
                t = T0 + off + k * PERIOD
                msgs.append((t, topic, video, {"timestamp": _stamp(t), "frame_id": "cam", "data": pkts[k], "format": video_format}))
        for k in range(5 * SECONDS + 1):  # 5 Hz fixes, heading north at 10 m/s
            t = T0 + k * 200_000_000
            lat = 48.0 + 10.0 * (k * 0.2) / 111_195.0
            msgs.append((t, "/gps/fix", fix, {"header": {"stamp": _stamp(t), "frame_id": "gps"}, "status": {"status": 0, "service": 1},
                                              "latitude": lat, "longitude": 11.0, "altitude": 500.0,
                                              "position_covariance": [0.0] * 9, "position_covariance_type": 0}))
        for k in range(20 * SECONDS + 1):  # 20 Hz speed
            t = T0 + k * 50_000_000
            msgs.append((t, "/vehicle/twist", twist, {"header": {"stamp": _stamp(t), "frame_id": "base_link"},
                                                      "twist": {"linear": {"x": 10.0, "y": 0.0, "z": 0.0},
                                                                "angular": {"x": 0.0, "y": 0.0, "z": 0.0}}}))
        if extra_string_topic:
            s = w.register_msgdef("std_msgs/msg/String", STRING_DEF)
            msgs.append((T0, "/chatter", s, {"data": "hello"}))
        for t, topic, schema, msg in sorted(msgs, key=lambda m: m[0]):
            w.write_message(topic, schema, msg, log_time=t + 2_000_000)  # logged 2 ms after capture
        w.finish()
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ros2_mcap(tmp_path_factory.mktemp("mcap") / "drive.mcap")


@pytest.fixture(scope="module")
def imported(recording: Path, tmp_path_factory: pytest.TempPathFactory):
    landing = tmp_path_factory.mktemp("mcap-landing")
    ref = import_mcap(recording, landing, vehicle_id="av-01")
    return landing, ref


def test_import_writes_raw_streams_with_frame_times(imported) -> None:
    landing, ref = imported
    assert ref.drive_id == "av-01_20251120T120000Z"
    m = json.loads((Path(ref.path) / "manifest.json").read_text())
    assert m["source"] == "mcap" and m["utc_offset_ns"] == 0
    cams = {c["name"]: c for c in m["cameras"]}
    assert set(cams) == {"cam_front", "cam_rear"}
    for name, off in (("cam_front", 0), ("cam_rear", B_OFFSET)):
        f = cams[name]["files"][0]
        assert cams[name]["codec"] == "h264" and f["path"].endswith(".h264") and f["start_ns"] is None
        ft = np.load(Path(ref.path) / f["frame_times"])
        # the message stamps (capture time), not the log times 2 ms later
        assert ft.tolist() == [T0 + off + k * PERIOD for k in range(N)]
    tel = pq.read_table(Path(ref.path) / "telemetry.parquet")
    t = tel.column("t_ns").to_numpy()
    assert np.all(np.diff(t) == 50_000_000)  # the grid follows the fastest topic (20 Hz)
    assert np.allclose(tel.column("speed_mps").to_numpy(), 10.0)
    lat = tel.column("lat_deg").to_numpy(zero_copy_only=False)
    assert np.all(np.isfinite(lat)) and lat[-1] > lat[0]
    heading = tel.column("heading_rad").to_numpy(zero_copy_only=False)
    assert np.nanmax(np.minimum(heading, 2 * np.pi - heading)) < 0.01  # north


def test_validates_and_frames_are_where_the_times_say(imported) -> None:
    from fleetcore.video import ClipExtractor

    _, ref = imported
    vd = validate_drive(Path(ref.path))
    assert [c.name for c in vd.cameras] == ["cam_front", "cam_rear"]
    with ClipExtractor(vd.path, vd.manifest, vd.frame_index, max_side=W) as ex:
        clip = ex.extract(T0 + 10 * PERIOD, T0 + 14 * PERIOD, rate_hz=FPS)
        assert [read_code(f) for f in clip.frames["cam_front"]] == [10, 11, 12, 13]
        for f, p in zip(clip.frames["cam_rear"], clip.pts_ns["cam_rear"]):
            assert read_code(f) == B_CODE + (p - T0 - B_OFFSET) // PERIOD
        assert all(abs(o) <= PERIOD // 2 for o in clip.offset_ns["cam_rear"])


@pytest.mark.timeout(120)
def test_curate_clips_are_time_synced(imported, tmp_path: Path) -> None:
    import webdataset as wds

    from fleetcore.clips import CurateConfig
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    landing, _ = imported
    store = tmp_path / "store"
    summary = run_curate(str(landing), str(store), CurateConfig(stages=()), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert summary["quarantined"] == []
    shards = sorted(str(p) for p in (store / "clips").rglob("*.tar"))
    assert shards
    seen = 0
    for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode("rgb8"):
        rec = s["json"]
        assert set(rec["cameras"]) == {"cam_front", "cam_rear"}
        times = rec["sample_times_ns"]
        for cam, off, base in (("cam_front", 0, 0), ("cam_rear", B_OFFSET, B_CODE)):
            assert rec["missing_frames"][cam] == []
            pts = rec["pts_ns"][cam]
            assert all(abs(p - t) <= PERIOD // 2 for p, t in zip(pts, times)), cam
            got = [read_code(s[f"{cam}.{j:0{rec['frame_digits']}d}.jpg"]) for j in range(rec["n_samples"])]
            assert got == [base + (p - T0 - off) // PERIOD for p in pts], cam
        seen += rec["n_samples"]
    assert seen >= N // 2


def test_json_foxglove_video_and_topic_filter(tmp_path: Path) -> None:
    from mcap.writer import Writer

    pkts = h264_packets(list(range(20)))
    path = tmp_path / "fox.mcap"
    with open(path, "wb") as f:
        w = Writer(f)
        w.start()
        sid = w.register_schema("foxglove.CompressedVideo", "jsonschema", b"{}")
        cid = w.register_channel("/front/h264", "json", sid)
        oid = w.register_channel("/other/h264", "json", sid)
        for k, p in enumerate(pkts):
            t = T0 + k * PERIOD
            msg = {"timestamp": {"sec": t // 10**9, "nsec": t % 10**9}, "frame_id": "f", "data": base64.b64encode(p).decode(), "format": "h264"}
            for ch in (cid, oid):
                w.add_message(ch, log_time=t, data=json.dumps(msg).encode(), publish_time=t)
        w.finish()
    ref = import_mcap(path, tmp_path / "landing", vehicle_id="av-02", topics=["/front/h264"])
    m = json.loads((Path(ref.path) / "manifest.json").read_text())
    assert [c["name"] for c in m["cameras"]] == ["front"] and m["telemetry"] is None
    vd = validate_drive(Path(ref.path))
    assert vd.frame_index.num_rows == 20


def test_leading_non_keyframes_are_dropped(tmp_path: Path) -> None:
    path = write_ros2_mcap(tmp_path / "late.mcap", drop_leading=3)  # starts mid-GOP: frames 3..9 cannot decode
    ref = import_mcap(path, tmp_path / "landing", vehicle_id="av-03")
    m = json.loads((Path(ref.path) / "manifest.json").read_text())
    ft = np.load(Path(ref.path) / m["cameras"][0]["files"][0]["frame_times"])
    assert ft[0] == T0 + 10 * PERIOD + (B_OFFSET if m["cameras"][0]["name"] == "cam_rear" else 0)
    validate_drive(Path(ref.path))


def test_camera_names_from_topics() -> None:
    assert camera_names(["/cam_front/compressed", "/sensors/Cam Left/image_raw/compressed", "/a/cam_front/video"]) == {
        "/cam_front/compressed": "cam_front", "/sensors/Cam Left/image_raw/compressed": "cam-left",
        "/a/cam_front/video": "a_cam_front"}


def test_errors(tmp_path: Path, recording: Path) -> None:
    landing = tmp_path / "landing"
    bad = tmp_path / "not.mcap"
    bad.write_bytes(b"this is not an mcap file at all")
    with pytest.raises(SourceImportError, match="expected an MCAP file"):
        import_mcap(bad, landing, vehicle_id="v")
    (tmp_path / "empty.mcap").write_bytes(b"")
    with pytest.raises(SourceImportError, match="the file is empty"):
        import_mcap(tmp_path / "empty.mcap", landing, vehicle_id="v")
    with pytest.raises(SourceImportError, match="not found"):
        import_mcap(tmp_path / "missing.mcap", landing, vehicle_id="v")
    strings = write_ros2_mcap(tmp_path / "s.mcap", extra_string_topic=True)
    with pytest.raises(SourceImportError, match=r"/chatter has an unsupported schema 'std_msgs/msg/String'"):
        import_mcap(strings, landing, vehicle_id="v", topics=["/chatter"])
    with pytest.raises(SourceImportError, match="vehicle_id 'a b' is not a valid id"):
        import_mcap(recording, landing, vehicle_id="a b")
    with pytest.raises(SourceImportError, match="topic '/nope' is not in the file"):
        import_mcap(recording, landing, vehicle_id="v", topics=["/nope"])
    vp9 = write_ros2_mcap(tmp_path / "vp9.mcap", video_format="vp9")
    with pytest.raises(SourceImportError, match="video format 'vp9' is not supported"):
        import_mcap(vp9, landing, vehicle_id="v")

    from mcap_ros2.writer import Writer

    only = tmp_path / "only-strings.mcap"
    with open(only, "wb") as f:
        w = Writer(f)
        s = w.register_msgdef("std_msgs/msg/String", STRING_DEF)
        w.write_message("/chatter", s, {"data": "x"}, log_time=T0)
        w.finish()
    with pytest.raises(SourceImportError, match=r"no supported topics .*/chatter \(std_msgs/msg/String\)"):
        import_mcap(only, landing, vehicle_id="v")
    assert not landing.exists() or not any(landing.rglob("manifest.json"))


def test_cli(recording: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "fleet_cli.main", "import", "mcap", str(recording), "--landing", str(tmp_path),
                           "--vehicle", "av-09", "--drive", "d1", "--topic", "/cam_front/compressed", "--topic", "/vehicle/twist"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "av-09" / "d1" / "manifest.json").read_text())
    assert [c["name"] for c in m["cameras"]] == ["cam_front"] and m["telemetry"] is not None


IMAGE_DEF = "std_msgs/Header header\nstring format\nuint8[] data\n" + SEP + HEADER + SEP + TIME
IMU_DEF = ("std_msgs/Header header\ngeometry_msgs/Quaternion orientation\nfloat64[9] orientation_covariance\n"
           "geometry_msgs/Vector3 angular_velocity\nfloat64[9] angular_velocity_covariance\n"
           "geometry_msgs/Vector3 linear_acceleration\nfloat64[9] linear_acceleration_covariance\n" + SEP + HEADER + SEP + TIME
           + SEP + "MSG: geometry_msgs/Quaternion\nfloat64 x\nfloat64 y\nfloat64 z\nfloat64 w\n"
           + SEP + "MSG: geometry_msgs/Vector3\nfloat64 x\nfloat64 y\nfloat64 z\n")


def test_compressed_images_and_imu(tmp_path: Path) -> None:
    """JPEG CompressedImage frames at an uneven rate → an H.264 stream with each frame's real time;
    speed from the fixes (no velocity topic), yaw rate and acceleration from the IMU."""
    import cv2
    from mcap_ros2.writer import Writer

    times = [T0 + k * PERIOD + (7_000_000 if k % 3 == 1 else 0) for k in range(20)]  # jittered 10 Hz
    path = tmp_path / "img.mcap"
    with open(path, "wb") as f:
        w = Writer(f)
        img = w.register_msgdef("sensor_msgs/msg/CompressedImage", IMAGE_DEF)
        imu = w.register_msgdef("sensor_msgs/msg/Imu", IMU_DEF)
        fix = w.register_msgdef("sensor_msgs/msg/NavSatFix", FIX_DEF)
        msgs = []
        for k, t in enumerate(times):
            ok, jpg = cv2.imencode(".jpg", coded_frame(k, W, H)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert ok
            msgs.append((t, "/left/image_raw/compressed", img, {"header": {"stamp": _stamp(t), "frame_id": "l"}, "format": "jpeg", "data": jpg.tobytes()}))
        for k in range(41):
            t = T0 + k * 50_000_000
            v3 = {"x": 0.0, "y": 0.0, "z": 0.0}
            msgs.append((t, "/imu", imu, {"header": {"stamp": _stamp(t), "frame_id": "imu"}, "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0},
                                          "orientation_covariance": [0.0] * 9, "angular_velocity": {**v3, "z": 0.1},
                                          "angular_velocity_covariance": [0.0] * 9, "linear_acceleration": {**v3, "x": 0.5, "y": -0.2},
                                          "linear_acceleration_covariance": [0.0] * 9}))
        for k in range(11):
            t = T0 + k * 200_000_000
            msgs.append((t, "/gps/fix", fix, {"header": {"stamp": _stamp(t), "frame_id": "gps"}, "status": {"status": 0, "service": 1},
                                              "latitude": 48.0 + 5.0 * k * 0.2 / 111_195.0, "longitude": 11.0, "altitude": 0.0,
                                              "position_covariance": [0.0] * 9, "position_covariance_type": 0}))
        for t, topic, schema, msg in sorted(msgs, key=lambda m: m[0]):
            w.write_message(topic, schema, msg, log_time=t)
        w.finish()
    ref = import_mcap(path, tmp_path / "landing", vehicle_id="av-04")
    m = json.loads((Path(ref.path) / "manifest.json").read_text())
    (cam,) = m["cameras"]
    assert cam["name"] == "left" and cam["files"][0]["path"] == "cameras/left/000.h264"
    assert np.load(Path(ref.path) / cam["files"][0]["frame_times"]).tolist() == times
    tel = pq.read_table(Path(ref.path) / "telemetry.parquet")
    assert np.allclose(tel.column("speed_mps").to_numpy(), 5.0, atol=0.05)
    assert np.allclose(tel.column("yaw_rate_radps").to_numpy(zero_copy_only=False), 0.1)
    assert np.allclose(tel.column("accel_lon_mps2").to_numpy(zero_copy_only=False), 0.5)
    assert np.allclose(tel.column("accel_lat_mps2").to_numpy(zero_copy_only=False), -0.2)
    vd = validate_drive(Path(ref.path))
    from fleetcore.video import ClipExtractor

    with ClipExtractor(vd.path, vd.manifest, vd.frame_index, max_side=W) as ex:
        clip = ex.extract(times[0], times[-1] + 1, rate_hz=FPS)
        assert [read_code(f) for f in clip.frames["left"]] == list(range(20))


def test_protobuf_foxglove_video(tmp_path: Path) -> None:
    """``foxglove.CompressedVideo`` in protobuf: the schema's FileDescriptorSet (dependency listed after
    the file that needs it) builds the message class."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
    from mcap.writer import Writer

    fds = descriptor_pb2.FileDescriptorSet()
    cv = fds.file.add(name="foxglove/CompressedVideo.proto", package="foxglove", syntax="proto3")
    cv.dependency.append("google/protobuf/timestamp.proto")
    msg = cv.message_type.add(name="CompressedVideo")
    F = descriptor_pb2.FieldDescriptorProto
    msg.field.add(name="timestamp", number=1, type=F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp", label=F.LABEL_OPTIONAL)
    msg.field.add(name="frame_id", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    msg.field.add(name="data", number=3, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    msg.field.add(name="format", number=4, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    timestamp_pb2.DESCRIPTOR.CopyToProto(fds.file.add())
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fds.file[1])
    pool.Add(fds.file[0])
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("foxglove.CompressedVideo"))

    path = tmp_path / "pb.mcap"
    with open(path, "wb") as f:
        w = Writer(f)
        w.start()
        sid = w.register_schema("foxglove.CompressedVideo", "protobuf", fds.SerializeToString())
        cid = w.register_channel("/camera/front_wide", "protobuf", sid)
        for k, p in enumerate(h264_packets(list(range(20)))):
            t = T0 + k * PERIOD
            m = cls(frame_id="f", data=p, format="h264")
            m.timestamp.seconds, m.timestamp.nanos = t // 10**9, t % 10**9
            w.add_message(cid, log_time=t + 1_000_000, data=m.SerializeToString(), publish_time=t)
        w.finish()
    ref = import_mcap(path, tmp_path / "landing", vehicle_id="av-05")
    man = json.loads((Path(ref.path) / "manifest.json").read_text())
    assert [c["name"] for c in man["cameras"]] == ["front_wide"]
    assert np.load(Path(ref.path) / man["cameras"][0]["files"][0]["frame_times"]).tolist() == [T0 + k * PERIOD for k in range(20)]
    validate_drive(Path(ref.path))


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"\x89MCAP0\r\n-truncated")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "fleet_cli.main", "import", "mcap", str(bad), "--landing", str(tmp_path / "l"),
                           "--vehicle", "v"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    err = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("INFO", "WARNING"))]
    assert len(err) == 1 and err[0].startswith("error:") and "bad.mcap" in err[0] and "MCAP" in err[0], proc.stderr


def test_truncated_recording_keeps_the_messages_before_the_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A recording cut off (no footer, a partial chunk): the whole chunks before the cut are imported."""
    full = write_ros2_mcap(tmp_path / "full.mcap", chunk_size=8192)
    cut = tmp_path / "cut.mcap"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    with caplog.at_level("WARNING"):
        ref = import_mcap(cut, tmp_path / "landing", vehicle_id="av-06")
    assert "damaged" in caplog.text
    vd = validate_drive(Path(ref.path))
    n = {c.name: c for c in vd.cameras}
    frames = vd.frame_index.group_by("camera").aggregate([("pts_ns", "count")]).to_pylist()
    assert {r["camera"] for r in frames} == {"cam_front", "cam_rear"} and all(0 < r["pts_ns_count"] < N for r in frames), frames
    assert set(n) == {"cam_front", "cam_rear"}


def hevc_packets(codes: list[int], *, gop: int = 10) -> list[bytes]:
    """One Annex-B HEVC access unit per frame (VPS/SPS/PPS in front of every keyframe), no B-frames."""
    import av

    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = W, H, "yuv420p"
    ctx.time_base = Fraction(1, FPS)
    ctx.framerate = Fraction(FPS, 1)
    ctx.options = {"preset": "ultrafast",
                   "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1:open-gop=0:log-level=error"}
    out: list[bytes] = []
    for i, code in enumerate(codes):
        frame = av.VideoFrame.from_ndarray(coded_frame(code, W, H), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out.extend(bytes(p) for p in ctx.encode(frame))
    out.extend(bytes(p) for p in ctx.encode(None))
    assert len(out) == len(codes)
    return out


ODOM_DEF = ("std_msgs/Header header\nstring child_frame_id\ngeometry_msgs/PoseWithCovariance pose\ngeometry_msgs/TwistWithCovariance twist\n"
            + SEP + HEADER + SEP + TIME
            + SEP + "MSG: geometry_msgs/PoseWithCovariance\ngeometry_msgs/Pose pose\nfloat64[36] covariance\n"
            + SEP + "MSG: geometry_msgs/Pose\ngeometry_msgs/Point position\ngeometry_msgs/Quaternion orientation\n"
            + SEP + "MSG: geometry_msgs/Point\nfloat64 x\nfloat64 y\nfloat64 z\n"
            + SEP + "MSG: geometry_msgs/Quaternion\nfloat64 x\nfloat64 y\nfloat64 z\nfloat64 w\n"
            + SEP + "MSG: geometry_msgs/TwistWithCovariance\ngeometry_msgs/Twist twist\nfloat64[36] covariance\n"
            + SEP + "MSG: geometry_msgs/Twist\ngeometry_msgs/Vector3 linear\ngeometry_msgs/Vector3 angular\n"
            + SEP + "MSG: geometry_msgs/Vector3\nfloat64 x\nfloat64 y\nfloat64 z\n")


def test_hevc_video_and_odometry(tmp_path: Path) -> None:
    """h265 CompressedVideo starting mid-GOP → a raw .hevc stream from its first keyframe; Odometry
    (no stamps: header.stamp zero) → speed on the log-time clock."""
    from mcap_ros2.writer import Writer

    pkts = hevc_packets(list(range(30)))
    path = tmp_path / "hevc.mcap"
    with open(path, "wb") as f:
        w = Writer(f)
        video = w.register_msgdef("foxglove_msgs/msg/CompressedVideo", VIDEO_DEF)
        odom = w.register_msgdef("nav_msgs/msg/Odometry", ODOM_DEF)
        msgs = []
        for k in range(4, 30):
            t = T0 + k * PERIOD
            msgs.append((t, "/camera/front/h265", video, {"timestamp": _stamp(t), "frame_id": "c", "data": pkts[k], "format": "h265"}))
        for k in range(31):
            t = T0 + k * PERIOD
            v3 = {"x": 0.0, "y": 0.0, "z": 0.0}
            msgs.append((t, "/odom", odom, {"header": {"stamp": {"sec": 0, "nanosec": 0}, "frame_id": "odom"}, "child_frame_id": "base_link",
                                            "pose": {"pose": {"position": v3, "orientation": {**v3, "w": 1.0}}, "covariance": [0.0] * 36},
                                            "twist": {"twist": {"linear": {**v3, "x": 3.0, "y": 4.0}, "angular": v3}, "covariance": [0.0] * 36}}))
        for t, topic, schema, msg in sorted(msgs, key=lambda m: m[0]):
            w.write_message(topic, schema, msg, log_time=t)
        w.finish()
    ref = import_mcap(path, tmp_path / "landing", vehicle_id="av-07")
    m = json.loads((Path(ref.path) / "manifest.json").read_text())
    (cam,) = m["cameras"]
    assert cam["name"] == "front" and cam["codec"] == "hevc" and cam["files"][0]["path"] == "cameras/front/000.hevc"
    assert np.load(Path(ref.path) / cam["files"][0]["frame_times"]).tolist() == [T0 + k * PERIOD for k in range(10, 30)]
    tel = pq.read_table(Path(ref.path) / "telemetry.parquet")
    assert tel.num_rows == 31 and np.allclose(tel.column("speed_mps").to_numpy(), 5.0)
    vd = validate_drive(Path(ref.path))
    from fleetcore.video import ClipExtractor

    with ClipExtractor(vd.path, vd.manifest, vd.frame_index, max_side=W) as ex:
        clip = ex.extract(T0 + 20 * PERIOD, T0 + 24 * PERIOD, rate_hz=FPS)
        assert [read_code(f) for f in clip.frames["front"]] == [20, 21, 22, 23]
