"""Video probing, frame index and sparse exact clip extraction, on real encoded video.

Videos are generated in tmp with the imageio-ffmpeg binary. Every frame carries its frame
number as 8 black/white blocks along the top edge, so the decoded RGB proves which frame
came back.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ffmpeg
import numpy as np
import pyarrow as pa
import pytest

from fleetcore.errors import VideoError
from fleetcore.landing.drives import DriveWriter, read_manifest
from fleetcore.video import (
    ClipExtractor,
    extract_clip,
    index_camera,
    index_drive,
    output_size,
    probe_video,
    sample_times,
)
from fleetcore.video.ffmpeg import encode_frames, encode_testsrc, run
from schemas import FRAME_INDEX

W, H = 320, 240
NBITS = 8
S = 1_000_000_000
T0 = 1_000 * S  # vehicle clock of the drive start


# ----------------------------------------------------------------------------- helpers
def coded_frame(k: int, w: int = W, h: int = H) -> np.ndarray:
    img = np.full((h, w, 3), 96, dtype=np.uint8)
    bw = w // NBITS
    for b in range(NBITS):
        if (k >> b) & 1:
            img[: h // 6, b * bw : (b + 1) * bw] = 255
        else:
            img[: h // 6, b * bw : (b + 1) * bw] = 0
    img[h // 2 :, :, 0] = (k * 37) % 256  # some texture so the encoder has work to do
    return img


def read_code(img: np.ndarray) -> int:
    h, w = img.shape[:2]
    bw = w / NBITS
    y = int(h / 12)
    k = 0
    for b in range(NBITS):
        x = int((b + 0.5) * bw)
        if img[y, x].mean() > 128:
            k |= 1 << b
    return k


def make_video(path: Path, first: int, n: int, *, fps: float = 10.0, encoder: str = "libx264", gop: int = 10, **kw) -> Path:
    return encode_frames((coded_frame(first + i) for i in range(n)), path, fps=fps, encoder=encoder, gop=gop, **kw)


def land_drive(root: Path, cameras: list[dict], drive_id: str = "veh-000-d1") -> tuple[Path, dict]:
    """cameras: [{"name", "files": [{"path", "start_ns", "frame_times", "make": callable(Path)}]}]"""
    w = DriveWriter(root, "veh-000", drive_id)
    mcams = []
    for cam in cameras:
        files = []
        for f in cam["files"]:
            f["make"](w.file(f["path"]))
            files.append({"path": f["path"], "start_ns": f.get("start_ns"), "frame_times": f.get("frame_times")})
        mcams.append({"name": cam["name"], "codec": cam.get("codec", "h264"), "files": files})
    w.finish({"utc_offset_ns": 0, "cameras": mcams, "telemetry": None, "source": "dashcam", "notes": None})
    return w.path, read_manifest(w.path)


def decoded_codes(frames: list) -> list[int | None]:
    return [None if f is None else read_code(f) for f in frames]


@pytest.fixture(scope="module")
def vids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vids")
    out = {
        "mp4": make_video(d / "a.mp4", 0, 40),  # 4 s, 10 fps, GOP 10, B-frames (x264 default)
        "mkv_hevc": make_video(d / "a.mkv", 0, 30, encoder="libx265"),
        "raw_h264": make_video(d / "a.h264", 0, 30),
        "raw_hevc": make_video(d / "a.hevc", 0, 30, encoder="libx265", bframes=0),
    }
    out["mpeg4"] = make_video(d / "m4.mp4", 0, 10, encoder="mpeg4")
    out["mjpeg"] = make_video(d / "mj.avi", 0, 10, encoder="mjpeg")
    out["no_decoder"] = d / "qqq1.mp4"  # a sample entry fourcc FFmpeg has no decoder for
    out["no_decoder"].write_bytes(out["mp4"].read_bytes().replace(b"avc1", b"qqq1"))
    run(ffmpeg.input("sine=d=1", f="lavfi").output(str(d / "audio.m4a"), **{"c:a": "aac"}), path=d / "audio.m4a")
    out["audio"] = d / "audio.m4a"
    run(ffmpeg.input("testsrc2=size=64x48", f="lavfi").output(str(d / "img.png"), **{"frames:v": "1"}), path=d / "img.png")
    out["png"] = d / "img.png"
    out["empty"] = d / "empty.mp4"
    out["empty"].write_bytes(b"")
    out["text"] = d / "notes.mp4"
    out["text"].write_text("this is a text file, not a video\n" * 20)
    # moov at the end (ffmpeg default): keep the first half -> the index is lost
    full = out["mp4"].read_bytes()
    out["trunc_moov_end"] = d / "trunc1.mp4"
    out["trunc_moov_end"].write_bytes(full[: len(full) // 2])
    # moov at the start, mdat cut
    fs = d / "faststart.mp4"
    run(ffmpeg.input(str(out["mp4"])).output(str(fs), c="copy", movflags="+faststart"), path=fs)
    out["faststart"] = fs
    fsb = fs.read_bytes()
    out["trunc_mdat_cut"] = d / "trunc2.mp4"
    out["trunc_mdat_cut"].write_bytes(fsb[: len(fsb) * 2 // 3])
    mkvb = out["mkv_hevc"].read_bytes()
    out["trunc_mkv"] = d / "trunc3.mkv"
    out["trunc_mkv"].write_bytes(mkvb[: len(mkvb) // 2])
    # valid container, garbage bitstream: zero the whole mdat payload
    out["undecodable"] = d / "zeroed.mp4"
    out["undecodable"].write_bytes(_zero_mdat(fsb))
    return out


def _zero_mdat(data: bytes) -> bytes:
    buf = bytearray(data)
    off = 0
    while off + 8 <= len(buf):
        size, typ = struct.unpack(">I4s", bytes(buf[off : off + 8]))
        if size < 8:
            break
        if typ == b"mdat":
            buf[off + 8 : off + size] = bytes(size - 8)
            return bytes(buf)
        off += size
    raise AssertionError("no mdat box found")


@pytest.fixture(scope="module")
def real_data() -> Path:
    p = Path(__file__).resolve().parents[1].parent / "shared/data/real"
    if not p.is_dir():
        pytest.skip(f"shared real data not found at {p}")
    return p


# ----------------------------------------------------------------------------- probe
def test_probe_mp4(vids: dict[str, Path]) -> None:
    info = probe_video(vids["mp4"])
    assert (info.codec, info.width, info.height) == ("h264", W, H)
    assert info.container.startswith("mov")
    assert info.frame_count == 40
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(4.0)
    assert info.keyframe_pts_ns == (0, 1 * S, 2 * S, 3 * S)
    assert info.keyframe_indices == (0, 10, 20, 30)
    assert info.stream_index == 0 and not info.vfr and not info.raw


def test_probe_hevc_mkv_and_raw_streams(vids: dict[str, Path]) -> None:
    mkv = probe_video(vids["mkv_hevc"])
    assert (mkv.codec, mkv.frame_count, mkv.keyframe_indices) == ("hevc", 30, (0, 10, 20))
    assert mkv.container.startswith("matroska")
    raw = probe_video(vids["raw_h264"])
    assert (raw.raw, raw.container, raw.codec, raw.frame_count, raw.keyframe_indices) == (True, "h264", "h264", 30, (0, 10, 20))
    rawh = probe_video(vids["raw_hevc"])
    assert (rawh.raw, rawh.codec, rawh.frame_count, rawh.keyframe_indices) == (True, "hevc", 30, (0, 10, 20))


def test_probe_without_counting(vids: dict[str, Path]) -> None:
    info = probe_video(vids["mp4"], count_frames=False)
    assert info.frame_count == 40 and info.keyframe_pts_ns == ()
    assert info.duration_s == pytest.approx(4.0)


@pytest.mark.parametrize(
    "name, code",
    [
        ("empty", "video_empty"),
        ("text", "video_not_media"),
        ("trunc_moov_end", "video_truncated"),
        ("trunc_mdat_cut", "video_truncated"),
        ("trunc_mkv", "video_truncated"),
        ("no_decoder", "video_unsupported_codec"),
        ("audio", "video_no_stream"),
        ("png", "video_no_stream"),
        ("undecodable", "video_undecodable"),
    ],
)
def test_probe_bad_inputs(vids: dict[str, Path], name: str, code: str) -> None:
    with pytest.raises(VideoError) as ei:
        probe_video(vids[name])
    assert ei.value.code == code
    assert ei.value.path == str(vids[name])
    assert str(vids[name]) in str(ei.value)


def test_probe_other_codecs_ffmpeg_decodes(vids: dict[str, Path]) -> None:
    m4 = probe_video(vids["mpeg4"])
    assert (m4.codec, m4.frame_count, m4.seek) == ("mpeg4", 10, "index")
    mj = probe_video(vids["mjpeg"])
    assert (mj.codec, mj.frame_count, mj.keyframe_indices) == ("mjpeg", 10, tuple(range(10)))  # intra-only


def test_probe_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoError) as ei:
        probe_video(tmp_path / "nope.mp4")
    assert ei.value.code == "video_missing"


def test_probe_faststart_is_fine(vids: dict[str, Path]) -> None:
    assert probe_video(vids["faststart"]).frame_count == 40


def test_probe_real_udacity(real_data: Path) -> None:
    info = probe_video(real_data / "video/udacity_lanelines_solidWhiteRight.mp4")
    assert (info.width, info.height, info.frame_count, info.stream_index, info.codec) == (960, 540, 221, 1, "h264")
    assert info.fps == pytest.approx(25.0)
    assert info.duration_s == pytest.approx(8.84)
    assert info.keyframe_pts_ns[0] == 0
    other = probe_video(real_data / "video/udacity_vehicledetection_test_video.mp4")
    assert (other.width, other.height, other.frame_count) == (1280, 720, 38)


# ----------------------------------------------------------------------------- helpers
def test_sample_times_and_output_size() -> None:
    ts = sample_times(T0, T0 + S, 10.0)
    assert ts.dtype == np.int64 and len(ts) == 10
    assert ts[0] == T0 and ts[-1] == T0 + 900_000_000
    assert len(sample_times(T0, T0, 10.0)) == 0
    assert list(sample_times(0, 1_000_000_000, 3.0)) == [0, 333_333_333, 666_666_667]
    with pytest.raises(ValueError):
        sample_times(0, S, 0.0)
    assert output_size(320, 240, 640) == (320, 240)  # never upscale
    assert output_size(320, 240, 160) == (160, 120)
    assert output_size(540, 960, 640) == (360, 640)


# ----------------------------------------------------------------------------- index + extraction
@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, pa.Table]:
    """front: 2 segments (0-3 s frames 0..29, 3-6 s frames 30..59), 10 fps, mp4 + mkv/hevc.
    rear: starts 2 s later, 20 frames at 10 fps (frame numbers 100..119).
    long: 20 s at 10 fps (frames 0..199), for sparse decoding.
    vfr: 20 frames at 10 fps then 40 at 20 fps (0..1.9 s, then 2.0..3.95 s).
    raw: raw HEVC with a frame_times array (50 ms spacing with jitter)."""
    root = tmp_path_factory.mktemp("landing")
    raw_times = T0 + np.arange(30, dtype=np.int64) * 50_000_000 + np.array([0, 3, -2] * 10, dtype=np.int64) * 1_000_000
    cams = [
        {"name": "front", "files": [
            {"path": "cameras/front/000.mp4", "start_ns": T0, "make": lambda p: make_video(p, 0, 30)},
            {"path": "cameras/front/001.mkv", "start_ns": T0 + 3 * S, "make": lambda p: make_video(p, 30, 30, encoder="libx265")},
        ]},
        {"name": "rear", "files": [
            {"path": "cameras/rear/000.mp4", "start_ns": T0 + 2 * S, "make": lambda p: make_video(p, 100, 20)},
        ]},
        {"name": "long", "files": [
            {"path": "cameras/long/000.mp4", "start_ns": T0, "make": lambda p: make_video(p, 0, 200, preset="ultrafast")},
        ]},
        {"name": "vfr", "files": [
            {"path": "cameras/vfr/000.mp4", "start_ns": T0,
             "make": lambda p: make_video(p, 0, 60, fps=20.0, extra={"vf": "setpts='if(lt(N,20),2*N,N+20)'", "fps_mode": "passthrough"})},
        ]},
        {"name": "raw", "codec": "hevc", "files": [
            {"path": "cameras/raw/000.hevc", "start_ns": None, "frame_times": "cameras/raw/000.times.npy",
             "make": lambda p: make_video(p, 0, 30, encoder="libx265", bframes=0)},
        ]},
        {"name": "rawh264", "files": [
            {"path": "cameras/rawh264/000.h264", "start_ns": None, "frame_times": "cameras/rawh264/000.times.npy",
             "make": lambda p: make_video(p, 0, 40, bframes=0)},
        ]},
    ]
    ddir, manifest = land_drive(root, cams)
    np.save(ddir / "cameras/raw/000.times.npy", raw_times)
    np.save(ddir / "cameras/rawh264/000.times.npy", T0 + np.arange(40, dtype=np.int64) * 100_000_000)
    fi = index_drive(ddir, manifest)
    return ddir, manifest, fi


def _cam(fi: pa.Table, name: str) -> dict:
    return fi.filter(pa.compute.equal(fi.column("camera"), name)).to_pydict()


def test_frame_index(drive: tuple[Path, dict, pa.Table]) -> None:
    ddir, manifest, fi = drive
    FRAME_INDEX.validate(fi)
    front = _cam(fi, "front")
    assert len(front["pts_ns"]) == 60
    assert front["pts_ns"] == [T0 + i * 100_000_000 for i in range(60)]
    assert np.all(np.diff(front["pts_ns"]) > 0)
    assert front["file_index"] == [0] * 30 + [1] * 30
    assert front["frame_index"] == list(range(30)) * 2
    assert [i for i, k in enumerate(front["is_keyframe"]) if k] == [0, 10, 20, 30, 40, 50]
    assert all(b is not None and b >= 0 for b in front["byte_offset"][:30])  # mp4 packet positions
    assert all(s > 0 for s in front["packet_size"])
    rear = _cam(fi, "rear")
    assert rear["pts_ns"][0] == T0 + 2 * S and len(rear["pts_ns"]) == 20
    vfr = _cam(fi, "vfr")
    expected_vfr = [T0 + i * 100_000_000 for i in range(20)] + [T0 + 2 * S + i * 50_000_000 for i in range(40)]
    assert vfr["pts_ns"] == expected_vfr
    assert probe_video(ddir / "cameras/vfr/000.mp4").vfr
    raw = _cam(fi, "raw")
    assert raw["pts_ns"] == np.load(ddir / "cameras/raw/000.times.npy").tolist()
    assert [i for i, k in enumerate(raw["is_keyframe"]) if k] == [0, 10, 20]
    # single-camera entry point gives the same rows
    one = index_camera(ddir, manifest["cameras"][0], drive_id=manifest["drive_id"])
    assert one.equals(fi.slice(0, 60))


def test_frame_times_mismatch(drive: tuple[Path, dict, pa.Table], tmp_path: Path) -> None:
    ddir, manifest, _ = drive
    cam = json.loads(json.dumps(manifest["cameras"][4]))
    np.save(ddir / "cameras/raw/short.npy", np.arange(5, dtype=np.int64))
    cam["files"][0]["frame_times"] = "cameras/raw/short.npy"
    with pytest.raises(VideoError) as ei:
        index_camera(ddir, cam, drive_id="x")
    assert ei.value.code == "video_frame_times_mismatch"


def test_extract_exact_frames_and_missing_camera(drive: tuple[Path, dict, pa.Table]) -> None:
    ddir, manifest, fi = drive
    clip = extract_clip(ddir, manifest, fi, T0 + S, T0 + 3 * S, rate_hz=10.0, cameras=["front", "rear"])
    assert clip.cameras == ["front", "rear"] and len(clip.sample_times_ns) == 20
    assert decoded_codes(clip.frames["front"]) == list(range(10, 30))
    assert np.all(clip.offset_ns["front"] == 0)
    assert clip.frames["front"][0].shape == (H, W, 3) and clip.frames["front"][0].dtype == np.uint8
    # rear starts at T0+2s: first 10 samples missing, then frames 100..109
    assert decoded_codes(clip.frames["rear"]) == [None] * 10 + list(range(100, 110))
    assert list(clip.pts_ns["rear"][:10]) == [-1] * 10
    assert list(clip.offset_ns["rear"][:10]) == [0] * 10
    assert list(clip.pts_ns["rear"][10:]) == [T0 + 2 * S + i * 100_000_000 for i in range(10)]
    assert list(clip.missing("rear")) == [True] * 10 + [False] * 10


def test_extract_offsets_nearest_and_resize(drive: tuple[Path, dict, pa.Table]) -> None:
    ddir, manifest, fi = drive
    # samples 30 ms after frame times: nearest is the earlier frame, offset -30 ms
    clip = extract_clip(ddir, manifest, fi, T0 + 30_000_000, T0 + S, rate_hz=10.0, max_side=160, cameras=["front"])
    assert decoded_codes(clip.frames["front"]) == list(range(10))
    assert np.all(clip.offset_ns["front"] == -30_000_000)
    assert clip.frames["front"][0].shape == (120, 160, 3)
    # 70 ms after: the later frame, +30 ms
    clip = extract_clip(ddir, manifest, fi, T0 + 70_000_000, T0 + S, rate_hz=10.0, cameras=["front"])
    assert decoded_codes(clip.frames["front"])[:3] == [1, 2, 3]
    assert np.all(clip.offset_ns["front"] == 30_000_000)
    # sampling faster than the camera: samples more than half a period from any frame are missing
    clip = extract_clip(ddir, manifest, fi, T0, T0 + S, rate_hz=20.0, cameras=["front"])
    assert decoded_codes(clip.frames["front"]) == [v for i in range(10) for v in (i, None)]


def test_extract_across_segment_files(drive: tuple[Path, dict, pa.Table]) -> None:
    ddir, manifest, fi = drive
    clip = extract_clip(ddir, manifest, fi, T0 + 2_500_000_000, T0 + 3_500_000_000, cameras=["front"])
    assert decoded_codes(clip.frames["front"]) == list(range(25, 35))  # 25..29 mp4/h264, 30..34 mkv/hevc
    # past the end of the last segment: missing
    clip = extract_clip(ddir, manifest, fi, T0 + 5_800_000_000, T0 + 6_300_000_000, cameras=["front"])
    assert decoded_codes(clip.frames["front"]) == [58, 59, None, None, None]
    # a seek inside the Matroska/HEVC segment
    clip = extract_clip(ddir, manifest, fi, T0 + 4_500_000_000, T0 + 5 * S, cameras=["front"])
    assert decoded_codes(clip.frames["front"]) == [45, 46, 47, 48, 49]
    assert clip.frames_decoded <= 12


def test_sparse_decoding(drive: tuple[Path, dict, pa.Table]) -> None:
    ddir, manifest, fi = drive
    clip = extract_clip(ddir, manifest, fi, T0 + 15 * S + 300_000_000, T0 + 16 * S, cameras=["long"])
    assert decoded_codes(clip.frames["long"]) == list(range(153, 160))
    # seek to the keyframe at 15 s (frame 150), decode to frame 159: far fewer than the 200 frames
    assert 10 <= clip.frames_decoded <= 20
    # sparse sampling across a long window re-seeks per GOP instead of decoding everything
    clip = extract_clip(ddir, manifest, fi, T0, T0 + 20 * S, rate_hz=0.5, cameras=["long"])
    assert decoded_codes(clip.frames["long"]) == list(range(0, 200, 20))
    assert clip.frames_decoded <= 40


def test_extractor_reuses_decoders_and_seeks_back(drive: tuple[Path, dict, pa.Table]) -> None:
    ddir, manifest, fi = drive
    windows = [(12, 13), (14, 15), (2, 3), (19, 20), (0, 1)]
    with ClipExtractor(ddir, manifest, fi, cameras=["long"], max_open_files=2) as ex:
        for a, b in windows:
            clip = ex.extract(T0 + a * S, T0 + b * S)
            assert decoded_codes(clip.frames["long"]) == list(range(a * 10, b * 10))
            assert clip.frames_decoded <= 20
        total = ex.frames_decoded
    assert total <= 20 * len(windows)


def test_extract_vfr(drive: tuple[Path, dict, pa.Table]) -> None:
    ddir, manifest, fi = drive
    clip = extract_clip(ddir, manifest, fi, T0 + 1_500_000_000, T0 + 3 * S, rate_hz=10.0, cameras=["vfr"])
    # 1.5..1.9 s -> frames 15..19 (10 fps part); 2.0..2.9 s -> frames 20, 22, ..., 38 (20 fps part)
    assert decoded_codes(clip.frames["vfr"]) == list(range(15, 20)) + list(range(20, 40, 2))
    assert np.all(clip.offset_ns["vfr"] == 0)


def test_extract_raw_hevc_with_frame_times(drive: tuple[Path, dict, pa.Table]) -> None:
    ddir, manifest, fi = drive
    times = np.load(ddir / "cameras/raw/000.times.npy")
    clip = extract_clip(ddir, manifest, fi, T0 + S, T0 + 1_400_000_000, rate_hz=20.0, cameras=["raw"])
    assert decoded_codes(clip.frames["raw"]) == list(range(20, 28))
    assert clip.frames_decoded <= 12  # re-opened at the byte offset of keyframe 20, not decoded from frame 0
    assert list(clip.pts_ns["raw"]) == times[20:28].tolist()
    assert list(clip.offset_ns["raw"]) == (times[20:28] - clip.sample_times_ns).tolist()
    with ClipExtractor(ddir, manifest, fi, cameras=["raw"]) as ex:
        a = ex.extract(T0 + 200_000_000, T0 + 400_000_000, rate_hz=20.0)
        b = ex.extract(T0 + S, T0 + 1_200_000_000, rate_hz=20.0)  # continues forward
        c = ex.extract(T0, T0 + 100_000_000, rate_hz=20.0)  # restarts from the file start
    assert decoded_codes(a.frames["raw"]) == [4, 5, 6, 7]
    assert decoded_codes(b.frames["raw"]) == [20, 21, 22, 23]
    assert decoded_codes(c.frames["raw"]) == [0, 1]


def test_extract_raw_h264_byte_seek(drive: tuple[Path, dict, pa.Table]) -> None:
    ddir, manifest, fi = drive
    with ClipExtractor(ddir, manifest, fi, cameras=["rawh264"]) as ex:
        for a in (3, 1, 2, 0):
            clip = ex.extract(T0 + a * S + 500_000_000, T0 + (a + 1) * S)
            assert decoded_codes(clip.frames["rawh264"]) == list(range(a * 10 + 5, a * 10 + 10))
            assert clip.frames_decoded <= 12


def test_extract_all_cameras_default_and_unknown_camera(drive: tuple[Path, dict, pa.Table]) -> None:
    ddir, manifest, fi = drive
    clip = extract_clip(ddir, manifest, fi, T0 + 2 * S, T0 + 2_200_000_000)
    assert clip.cameras == ["front", "rear", "long", "vfr", "raw", "rawh264"]
    assert all(len(clip.frames[c]) == 2 for c in clip.cameras)
    with pytest.raises(ValueError, match="unknown camera"):
        extract_clip(ddir, manifest, fi, T0, T0 + S, cameras=["side"])


def test_testsrc_helper(tmp_path: Path) -> None:
    p = encode_testsrc(tmp_path / "t.mp4", seconds=1.0, fps=10, size=(160, 120), gop=5)
    info = probe_video(p)
    assert (info.width, info.height, info.frame_count, info.keyframe_indices) == (160, 120, 10, (0, 5))


def test_fast_conversion_matches_reference(tmp_path: Path, real_data: Path) -> None:
    import av

    from fleetcore.video.convert import frame_to_rgb, frame_to_rgb_reference

    synth = encode_testsrc(tmp_path / "hd.mp4", seconds=0.5, fps=10, size=(1280, 720), gop=5)
    for src in (synth, real_data / "video/udacity_lanelines_solidWhiteRight.mp4"):
        with av.open(str(src)) as c:
            frame = next(iter(c.decode(video=0)))
            for max_side in (640, 333):
                fast = frame_to_rgb(frame, max_side)
                ref = frame_to_rgb_reference(frame, max_side)
                assert fast.shape == ref.shape and fast.dtype == np.uint8
                diff = np.abs(fast.astype(np.int16) - ref.astype(np.int16))
                assert diff.mean() < 2.0, (src, max_side, diff.mean())
                assert np.percentile(diff, 99) <= 8, (src, max_side)
                out = np.empty_like(ref)
                assert frame_to_rgb(frame, max_side, out=out) is out
                assert np.array_equal(out, fast)


def _strip_repeated_parameter_sets(data: bytes, codec: str) -> bytes:
    """Annex-B stream with parameter sets kept only before the first frame (like many camera streams)."""
    from fleetcore.video.rawseek import nal_units

    params = {7, 8} if codec == "h264" else {32, 33, 34}
    out = bytearray()
    seen_slice = False
    for s, e in nal_units(data):
        t = data[s] & 0x1F if codec == "h264" else (data[s] >> 1) & 0x3F
        is_slice = t in (1, 5) if codec == "h264" else t < 32
        if t in params and seen_slice:
            continue
        seen_slice = seen_slice or is_slice
        out += b"\x00\x00\x00\x01" + data[s:e]
    return bytes(out)


@pytest.mark.parametrize("codec, encoder", [("h264", "libx264"), ("hevc", "libx265")])
def test_raw_byte_seek_with_headers_only_at_start(tmp_path: Path, codec: str, encoder: str) -> None:
    from fleetcore.video.rawseek import nal_units

    src = make_video(tmp_path / f"src.{codec}", 0, 40, encoder=encoder, bframes=0)
    bare = _strip_repeated_parameter_sets(src.read_bytes(), codec)
    params = {7, 8} if codec == "h264" else {32, 33, 34}
    types = [bare[s] & 0x1F if codec == "h264" else (bare[s] >> 1) & 0x3F for s, _ in nal_units(bare)]
    assert sum(t in params for t in types) == len(params)  # only the leading set is left

    def write(p: Path) -> None:
        p.write_bytes(bare)

    ddir, manifest = land_drive(tmp_path / "landing", [{"name": "cam", "codec": codec, "files": [
        {"path": f"cam/000.{codec}", "start_ns": None, "frame_times": "cam/times.npy", "make": write}]}])
    np.save(ddir / "cam/times.npy", T0 + np.arange(40, dtype=np.int64) * 100_000_000)
    fi = index_drive(ddir, manifest)
    assert probe_video(ddir / f"cam/000.{codec}").frame_count == 40
    clip = extract_clip(ddir, manifest, fi, T0 + 3 * S, T0 + 3_500_000_000)
    assert decoded_codes(clip.frames["cam"]) == [30, 31, 32, 33, 34]
    assert clip.frames_decoded <= 8


def test_extractor_reuses_frame_memory_only_when_released(drive: tuple[Path, dict, pa.Table]) -> None:
    ddir, manifest, fi = drive
    with ClipExtractor(ddir, manifest, fi, cameras=["long"]) as ex:
        a = ex.extract(T0 + 2 * S, T0 + 3 * S)
        b = ex.extract(T0 + 5 * S, T0 + 6 * S)  # a is alive: must not be overwritten
        assert decoded_codes(a.frames["long"]) == list(range(20, 30))
        assert decoded_codes(b.frames["long"]) == list(range(50, 60))
        assert not np.shares_memory(a.frames["long"][0], b.frames["long"][0])
        kept = a.frames["long"][3]  # one frame kept alive keeps its arena busy
        del a
        c = ex.extract(T0 + 8 * S, T0 + 9 * S)
        assert read_code(kept) == 23
        assert decoded_codes(c.frames["long"]) == list(range(80, 90))
        del b, kept
        d = ex.extract(T0 + 11 * S, T0 + 12 * S)  # reuses a released arena
        assert decoded_codes(d.frames["long"]) == list(range(110, 120))
        assert len(ex._pool._arenas) == 3


def test_arena_pool_reuses_only_unreferenced_arenas() -> None:
    from fleetcore.video.extract import ArenaPool, arena_size_class

    pool = ArenaPool(1 << 20)
    a = pool.get(4, (2, 2, 3))
    b = pool.get(4, (2, 2, 3))  # a alive -> new arena
    view = a[1]
    del a
    c = pool.get(4, (2, 2, 3))  # a's arena still referenced through `view`
    assert len(pool._arenas) == 3
    del view, b
    d = pool.get(3, (2, 2, 3))
    assert len(pool._arenas) == 3 and any(np.shares_memory(d, x) for x in pool._arenas[:2])
    assert not np.shares_memory(d, c)
    big = pool.get(100_000, (2, 2, 3))  # over the pool's byte budget: a plain allocation
    assert len(pool._arenas) == 3 and big.shape == (100_000, 2, 2, 3)
    assert [arena_size_class(n) for n in (1, 8, 9, 68, 72, 79, 104, 172)] == [8, 8, 10, 78, 78, 97, 121, 188]


def test_arena_pool_size_classes_and_budget() -> None:
    from fleetcore.video.extract import ArenaPool

    frame = (4, 4, 3)  # 48 bytes a frame
    pool = ArenaPool(48 * 270)
    a = pool.get(68, frame)
    assert a.shape == (68, *frame) and pool._arenas[0].shape[0] == 78  # allocated in its size class
    del a
    b = pool.get(72, frame)  # a clip a little longer reuses the released arena
    assert len(pool._arenas) == 1 and np.shares_memory(b, pool._arenas[0])
    c = pool.get(100, frame)  # b alive: a new arena of 121 frames; 199 kept, within the budget
    assert len(pool._arenas) == 2 and pool.nbytes == 48 * 199
    del c
    d = pool.get(160, frame)  # 188 frames fit only without c's (released) arena: it is dropped
    assert len(pool._arenas) == 2 and pool.nbytes == 48 * (78 + 188)
    assert np.shares_memory(d, pool._arenas[1]) and not np.shares_memory(d, b)
    f = pool.get(100, frame)  # b and d in use fill the budget: a plain allocation, not kept
    assert len(pool._arenas) == 2 and not any(np.shares_memory(f, x) for x in pool._arenas)
    b[:] = 7
    del d
    e = pool.get(150, frame)  # d's arena again; b's, still in use, untouched
    assert np.shares_memory(e, pool._arenas[1]) and (b == 7).all() and e.shape == (150, *frame)


def test_arena_pool_carries_over_between_extractors(drive: tuple[Path, dict, pa.Table]) -> None:
    """The curate job keeps one pool per worker: the next drive's clips reuse the memory of the
    last drive's released frames, never that of frames still in use."""
    from fleetcore.video import ArenaPool

    ddir, manifest, fi = drive
    pool = ArenaPool()
    with ClipExtractor(ddir, manifest, fi, cameras=["long"], arena_pool=pool) as ex:
        a = ex.extract(T0 + 2 * S, T0 + 3 * S)
        kept = ex.extract(T0 + 5 * S, T0 + 6 * S)
    assert len(pool._arenas) == 2  # kept when the extractor closes
    del a
    with ClipExtractor(ddir, manifest, fi, cameras=["long"], arena_pool=pool) as ex:
        c = ex.extract(T0 + 8 * S, T0 + 9 * S)
    assert len(pool._arenas) == 2
    assert any(np.shares_memory(c.frames["long"][0], x) for x in pool._arenas)
    assert not np.shares_memory(c.frames["long"][0], kept.frames["long"][0])
    assert decoded_codes(kept.frames["long"]) == list(range(50, 60))
    assert decoded_codes(c.frames["long"]) == list(range(80, 90))
