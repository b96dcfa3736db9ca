"""Every codec and container FFmpeg decodes: each is imported, validated, sparsely extracted and
curated with its frames aligned to their timestamps.

One 2 s clip (20 frames at 10 fps, 160x96, keyframe every 5 frames) is encoded per codec and
container with the bundled ffmpeg. Every frame carries its frame number as 8 black/white blocks
(``test_video.coded_frame``), so a decoded frame proves which frame came back. Encoders the bundled
ffmpeg lacks are skipped with the reason.
"""

from __future__ import annotations

import datetime as dt
import functools
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import ffmpeg
import pyarrow as pa
import pytest

from fleetcore.clips import CurateConfig
from fleetcore.ingest.importers import import_dashcam
from fleetcore.ingest.validate import validate_drive
from fleetcore.video import ClipExtractor
from fleetcore.video.ffmpeg import ffmpeg_exe, run
from pipelines.curate import DEFAULT_RUNNER, run_curate
from test_video import coded_frame, read_code

W, H, FPS, N, GOP = 160, 96, 10, 20, 5
PERIOD = 1_000_000_000 // FPS
START_UTC = dt.datetime(2025, 11, 20, 12, 0, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Case:
    id: str
    encoder: str  # the ffmpeg encoder that makes the source
    ext: str  # container (suffix) or raw elementary stream
    codec: str  # what the probe must report
    seek: str  # the frame index's seek mode
    opts: dict[str, str] = field(default_factory=dict)  # more encoder options
    fmt: str | None = None  # force the output format (and write it to a pipe: no index)
    remux: tuple[tuple[str, ...], tuple[str, ...]] | None = None  # (input, output) options of a stream copy
    first_pts_ns: int = 0  # presentation time of frame 0


X264 = {"c:v": "libx264", "preset": "veryfast", "bf": "2", "g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0", "pix_fmt": "yuv420p"}
X265_PARAMS = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:open-gop=0:log-level=error"
X265 = {"c:v": "libx265", "preset": "ultrafast", "x265-params": X265_PARAMS, "pix_fmt": "yuv420p"}
ENCODERS = {
    "libx264": X264,
    "libx265": X265,
    "libx265-10": {**X265, "pix_fmt": "yuv420p10le"},
    "libx265-open-gop": {**X265, "x265-params": "keyint=10:min-keyint=10:scenecut=0:open-gop=1:bframes=3:log-level=error"},
    "mpeg4": {"c:v": "mpeg4", "q:v": "3", "g": str(GOP), "pix_fmt": "yuv420p"},
    "mjpeg": {"c:v": "mjpeg", "q:v": "3", "pix_fmt": "yuvj420p"},
    "libvpx-vp9": {"c:v": "libvpx-vp9", "deadline": "realtime", "cpu-used": "8", "crf": "30", "b:v": "0", "g": str(GOP),
                   "keyint_min": str(GOP), "pix_fmt": "yuv420p"},
    "libsvtav1": {"c:v": "libsvtav1", "preset": "12", "g": str(GOP), "pix_fmt": "yuv420p", "svtav1-params": "log-level=0"},
    "libaom-av1": {"c:v": "libaom-av1", "usage": "realtime", "cpu-used": "10", "g": str(GOP), "pix_fmt": "yuv420p"},
    "librav1e": {"c:v": "librav1e", "speed": "10", "g": str(GOP), "pix_fmt": "yuv420p"},
}
AV1_ENCODERS = ("libsvtav1", "libaom-av1", "librav1e")
VARIANTS = {"libx265-10": "libx265", "libx265-open-gop": "libx265"}  # option sets of one ffmpeg encoder

CASES = [
    Case("h264-mp4", "libx264", "mp4", "h264", "index"),
    Case("h264-mov", "libx264", "mov", "h264", "index"),
    Case("h264-mkv", "libx264", "mkv", "h264", "index"),
    # AVI stores decode times only (B-frames reordered): frames are timed by DTS in output order.
    Case("h264-avi", "libx264", "avi", "h264", "index"),
    # Written to a pipe, AVI has no idx1 and placeholder header counts; FFmpeg indexes it by scanning.
    Case("h264-avi-no-idx1", "libx264", "avi", "h264", "index", fmt="avi"),
    # MPEG-TS has no index (the demuxer's seek does not land on keyframes); its PTS start at the
    # muxer's 1.4 s offset plus the B-frame delay.
    Case("h264-ts", "libx264", "ts", "h264", "decode", first_pts_ns=16 * PERIOD),
    Case("h264-raw", "libx264", "h264", "h264", "byte"),
    Case("hevc-mp4", "libx265", "mp4", "hevc", "index"),
    Case("hevc-mkv", "libx265", "mkv", "hevc", "index"),
    Case("hevc-raw", "libx265", "hevc", "hevc", "byte"),
    # Open GOPs: the frames after a CRA keyframe in decode order include leading pictures shown before
    # it, which a decoder starting there drops; validation finds byte seeking wrong and decodes instead.
    Case("hevc-raw-open-gop", "libx265-open-gop", "hevc", "hevc", "decode"),
    Case("hevc10-mkv", "libx265-10", "mkv", "hevc", "index"),
    Case("hevc10-mov", "libx265-10", "mov", "hevc", "index"),
    Case("mpeg4-avi", "mpeg4", "avi", "mpeg4", "index"),
    Case("mpeg4-mp4", "mpeg4", "mp4", "mpeg4", "index"),
    Case("mjpeg-avi", "mjpeg", "avi", "mjpeg", "index"),
    Case("mjpeg-mov", "mjpeg", "mov", "mjpeg", "index"),
    Case("vp9-webm", "libvpx-vp9", "webm", "vp9", "index"),
    Case("vp9-mp4", "libvpx-vp9", "mp4", "vp9", "index"),
    Case("av1-mkv", "av1", "mkv", "av1", "index"),
    Case("av1-mp4", "av1", "mp4", "av1", "index"),
    # Negative start PTS: the MP4/MOV edit list starts after the first frames, which FFmpeg flags discard.
    Case("h264-mp4-ts-offset", "libx264", "mp4", "h264", "index",
         remux=((), ("-output_ts_offset", "-0.2")), first_pts_ns=-2 * PERIOD),
    Case("h264-mov-ts-offset", "libx264", "mov", "h264", "index",
         remux=((), ("-output_ts_offset", "-0.2")), first_pts_ns=-2 * PERIOD),
    Case("h264-mp4-ss-copy", "libx264", "mp4", "h264", "index", remux=(("-ss", "0.35"), ()), first_pts_ns=-4 * PERIOD),
]
IDS = [c.id for c in CASES]
NEGATIVE = [c for c in CASES if c.remux is not None]


@functools.cache
def _encoders() -> frozenset[str]:
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, check=True).stdout
    return frozenset(line.split()[1] for line in out.splitlines() if line.startswith(" V") and len(line.split()) > 1)


def _encoder(case: Case) -> str | None:
    """The encoder to use for ``case`` (for AV1 the first one the bundled ffmpeg has), None if missing."""
    names = AV1_ENCODERS if case.encoder == "av1" else (VARIANTS.get(case.encoder, case.encoder),)
    key = next((n for n in names if n in _encoders()), None)
    if key is None:
        return None
    return case.encoder if case.encoder in VARIANTS else key


def _encode(case: Case, out: Path) -> Path:
    key = _encoder(case)
    if key is None:
        pytest.skip(f"the bundled ffmpeg has no {case.encoder} encoder")
    data = b"".join(coded_frame(k, W, H).tobytes() for k in range(N))
    src = ffmpeg.input("-", f="rawvideo", pix_fmt="rgb24", s=f"{W}x{H}", r=str(FPS))
    opts = {**ENCODERS[key], **case.opts}
    if case.fmt is not None:  # a non-seekable output: the muxer cannot go back to write an index
        cmd = ffmpeg.compile(src.output("pipe:1", f=case.fmt, **opts), cmd=[ffmpeg_exe(), "-hide_banner", "-loglevel", "error"])
        with open(out, "wb") as f:
            subprocess.run(cmd, input=data, stdout=f, stderr=subprocess.PIPE, check=True)
        return out
    if case.remux is None:
        run(src.output(str(out), **opts), path=out, input_bytes=data)
        return out
    tmp = out.with_name(f"src-{out.name}")
    run(src.output(str(tmp), **opts), path=tmp, input_bytes=data)
    pre, post = case.remux
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *pre, "-i", str(tmp), "-c", "copy", *post, str(out)],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """Every case encoded and imported with ``fleet import dashcam``'s importer (vehicle ``codecs``, one drive a case)."""
    tmp = tmp_path_factory.mktemp("codecs")
    root = tmp / "landing"
    drives: dict[str, Path] = {}
    for case in CASES:
        if _encoder(case) is None:
            continue
        video = _encode(case, tmp / f"{case.id}.{case.ext}")
        ref = import_dashcam(video, root, vehicle_id="codecs", drive_id=case.id, start_utc=START_UTC)
        drives[case.id] = Path(ref.root) / ref.vehicle_id / ref.drive_id
    return root, drives


def _drive(landing: tuple[Path, dict[str, Path]], case: Case) -> Path:
    if case.id not in landing[1]:
        pytest.skip(f"the bundled ffmpeg has no {case.encoder} encoder")
    return landing[1][case.id]


def _expected_pts(case: Case) -> list[int]:
    return [case.first_pts_ns + k * PERIOD for k in range(N)]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_validates_with_codec_and_seek_mode(landing, case: Case) -> None:
    vd = validate_drive(_drive(landing, case))
    info = vd.cameras[0].infos[0]
    assert (info.codec, info.width, info.height, info.frame_count) == (case.codec, W, H, N)
    assert info.seek == case.seek
    fi = vd.frame_index
    assert fi.column("pts_ns").to_pylist() == _expected_pts(case)
    assert set(fi.column("seek").to_pylist()) == {case.seek}
    assert vd.manifest["cameras"][0]["codec"] == case.codec


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sparse_extraction_is_aligned(landing, case: Case) -> None:
    """Windows out of order (late, early, middle): each sample gets the frame of its time."""
    vd = validate_drive(_drive(landing, case))
    t0 = case.first_pts_ns
    with ClipExtractor(vd.path, vd.manifest, vd.frame_index, max_side=W) as ex:  # the last frames only
        clip = ex.extract(t0 + 17 * PERIOD, t0 + 19 * PERIOD, rate_hz=FPS)
        assert [read_code(f) for f in clip.frames["front"]] == [17, 18]
        if case.seek == "decode":
            assert clip.frames_decoded >= 18  # decoded from the start of the file
        else:
            assert clip.frames_decoded <= 2 + GOP  # from the keyframe at frame 15 (plus decoder delay)
    with ClipExtractor(vd.path, vd.manifest, vd.frame_index, max_side=W) as ex:
        for a, b in ((16, 19), (0, 3), (7, 12), (11, 13)):
            clip = ex.extract(t0 + a * PERIOD, t0 + b * PERIOD, rate_hz=FPS)
            assert [None if f is None else read_code(f) for f in clip.frames["front"]] == list(range(a, b)), (a, b)
            assert list(clip.pts_ns["front"]) == [t0 + k * PERIOD for k in range(a, b)]
        whole = ex.extract(t0, t0 + N * PERIOD, rate_hz=FPS)
        assert [None if f is None else read_code(f) for f in whole.frames["front"]] == list(range(N))


@pytest.mark.parametrize("case", NEGATIVE, ids=[c.id for c in NEGATIVE])
def test_negative_start_pts_loses_no_frames(landing, case: Case) -> None:
    """H.264 with B-frames whose MP4/MOV edit list starts after the first frames (negative start PTS):
    the frames before PTS 0 are indexed at their negative times and extracted, none missing."""
    vd = validate_drive(_drive(landing, case))
    pts = vd.frame_index.column("pts_ns").to_pylist()
    assert pts[0] == case.first_pts_ns < 0 and len(pts) == N
    with ClipExtractor(vd.path, vd.manifest, vd.frame_index, max_side=W) as ex:
        clip = ex.extract(case.first_pts_ns, case.first_pts_ns + 4 * PERIOD, rate_hz=FPS)
        assert not clip.missing("front").any()
        assert [read_code(f) for f in clip.frames["front"]] == [0, 1, 2, 3]
        assert list(clip.offset_ns["front"]) == [0, 0, 0, 0]


@pytest.fixture(scope="module")
def curated(landing, tmp_path_factory: pytest.TempPathFactory):
    root, _ = landing
    store = tmp_path_factory.mktemp("codecs-store") / "store"
    summary = run_curate(str(root), str(store), CurateConfig(stages=()), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    return store, summary


@pytest.mark.slow
def test_curate_every_codec_aligned(landing, curated) -> None:
    """One curate run over all the drives: nothing quarantined, and every clip's frames match
    the frame numbers of their sample times."""
    import webdataset as wds

    store, summary = curated
    assert summary["quarantined"] == []
    assert summary["drives_curated"] == len(landing[1])
    first = {c.id: c.first_pts_ns for c in CASES}
    seen: dict[str, int] = {}
    shards = sorted(str(p) for p in (store / "clips").rglob("*.tar"))
    for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode("rgb8"):
        rec = s["json"]
        drive = rec["record"]["drive_id"]
        assert rec["missing_frames"]["front"] == [], drive
        pts = rec["pts_ns"]["front"]
        got = [read_code(s[f"front.{j:0{rec['frame_digits']}d}.jpg"]) for j in range(rec["n_samples"])]
        want = [(p - first[drive]) // PERIOD for p in pts]
        assert got == want, drive
        assert all(abs(o) <= PERIOD // 2 for o in rec["offset_ns"]["front"])
        seen[drive] = seen.get(drive, 0) + len(got)
    assert set(seen) == set(landing[1])
    assert all(n >= N // 2 for n in seen.values()), seen


@pytest.mark.parametrize("case_id", ["h264-mp4", "h264-raw", "hevc-mkv"])
def test_index_without_seek_column(landing, case_id: str) -> None:
    """Frame indexes written before the seek column existed (null when read from a store) still extract."""
    case = next(c for c in CASES if c.id == case_id)
    vd = validate_drive(_drive(landing, case))
    for fi in (vd.frame_index.drop_columns(["seek"]),
               vd.frame_index.set_column(vd.frame_index.schema.get_field_index("seek"), "seek",
                                         pa.nulls(vd.frame_index.num_rows, pa.string()))):
        with ClipExtractor(vd.path, vd.manifest, fi, max_side=W) as ex:
            for a, b in ((16, 19), (2, 5)):
                clip = ex.extract(a * PERIOD, b * PERIOD, rate_hz=FPS)
                assert [read_code(f) for f in clip.frames["front"]] == list(range(a, b))


@pytest.mark.parametrize("case_id", ["h264-mp4", "h264-raw", "hevc-raw", "hevc-mkv", "h264-avi", "h264-ts"])
def test_drive_in_object_storage_is_read_in_place(landing, case_id: str) -> None:
    """A drive behind a URI (fsspec's memory filesystem stands in for an object store) validates to the
    same frame index and digests as its local copy, and extraction over byte ranges gives the same
    frames: container index seeks, raw streams spliced at a keyframe's byte offset, decoding forward."""
    import fsspec

    case = next(c for c in CASES if c.id == case_id)
    local = _drive(landing, case)
    fs = fsspec.filesystem("memory")
    uri = f"memory://landing-{case_id}/{local.parent.name}/{local.name}"
    fs.put(str(local), uri.removeprefix("memory://"), recursive=True)
    try:
        ref, vd = validate_drive(local), validate_drive(uri)
        assert vd.path == uri and vd.frame_index.equals(ref.frame_index) and vd.source_digests == ref.source_digests
        assert vd.cameras[0].infos[0].seek == case.seek
        t0 = case.first_pts_ns
        with ClipExtractor(vd.path, vd.manifest, vd.frame_index, max_side=W) as ex:
            for a, b in ((16, 19), (0, 3), (7, 12)):
                clip = ex.extract(t0 + a * PERIOD, t0 + b * PERIOD, rate_hz=FPS)
                assert [None if f is None else read_code(f) for f in clip.frames["front"]] == list(range(a, b)), (a, b)
    finally:
        fs.rm(f"landing-{case_id}", recursive=True)
