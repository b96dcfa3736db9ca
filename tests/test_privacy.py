"""Privacy stage on real bytes: a real face photo and a drawn licence plate pasted into a real road
frame are detected and blurred, the JPEG (simplejpeg, as the clip store writes it) shows it, pixels
elsewhere are untouched, and detector failures quarantine the clip (PrivacyError).

The face is scikit-image's bundled ``astronaut`` photo (scikit-image is a test-only dependency)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import simplejpeg

from fleetcore.stages import privacy
from fleetcore.errors import ConfigError, FleetError
from fleetcore.stages.privacy import PrivacyError, PrivacyStage, pad_box
from fleetcore.stages.options import PrivacyOptions
from fleetcore.stages.registry import build_stages
from fleetcore.video.extract import ClipFrames

skdata = pytest.importorskip("skimage.data")

FACE_AT = (40, 40)  # x, y of the pasted face crop
PLATE_BOX = (380, 250, 168, 42)  # x, y, w, h of the drawn plate


def clip_frames(sample_times_ns: np.ndarray, cameras: list[str], frames: dict[str, list[np.ndarray | None]]) -> ClipFrames:
    """The extractor's own ClipFrames, without presentation times (the stages do not read them)."""
    return ClipFrames(sample_times_ns, cameras, frames, pts_ns={}, offset_ns={})


@pytest.fixture(scope="module")
def road(real_data: Path) -> np.ndarray:
    import av

    with av.open(str(real_data / "video" / "udacity_lanelines_solidWhiteRight.mp4")) as c:
        f = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    return cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA)


def face_crop() -> np.ndarray:
    """The astronaut's head and shoulders (face about 80 px wide)."""
    img = skdata.astronaut()  # 512x512 RGB, face at about (177, 66, 95, 95)
    crop = img[20:220, 130:320]
    return cv2.resize(crop, (160, 168), interpolation=cv2.INTER_AREA)


def draw_plate(frame: np.ndarray) -> None:
    x, y, w, h = PLATE_BOX
    cv2.rectangle(frame, (x, y), (x + w, y + h), (250, 250, 250), -1)
    cv2.rectangle(frame, (x, y), (x + w, y + h), (0, 0, 0), 2)
    cv2.putText(frame, "A123BC77", (x + 7, y + h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.85, (0, 0, 0), 2, cv2.LINE_AA)


def scene(road: np.ndarray) -> np.ndarray:
    f = road.copy()
    fc = face_crop()
    x, y = FACE_AT
    f[y : y + fc.shape[0], x : x + fc.shape[1]] = fc
    draw_plate(f)
    return f


def jpeg_roundtrip(f: np.ndarray) -> np.ndarray:
    return simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(np.ascontiguousarray(f), quality=90, colorspace="RGB"), colorspace="RGB")


def hf_energy(img: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    g = cv2.cvtColor(img[y : y + h, x : x + w], cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(g, cv2.CV_64F).var())


def make_clip(frames: list[np.ndarray | None], cameras: tuple[str, ...] = ("front",)) -> ClipFrames:
    return clip_frames(np.arange(len(frames), dtype=np.int64) * 100_000_000, list(cameras), {c: list(frames) for c in cameras})


def test_detects_face_and_plate(road):
    found = PrivacyStage().detect(scene(road))
    kinds = sorted(k for k, _ in found)
    assert "face" in kinds and "plate" in kinds
    fx, fy = FACE_AT
    face = [b for k, b in found if k == "face"]
    assert any(fx <= b[0] + b[2] / 2 <= fx + 160 and fy <= b[1] + b[3] / 2 <= fy + 168 for b in face)
    px, py, pw, ph = PLATE_BOX
    plate = [b for k, b in found if k == "plate"]
    assert any(px <= b[0] + b[2] / 2 <= px + pw and py <= b[1] + b[3] / 2 <= py + ph for b in plate)
    assert PrivacyStage().detect(road) == []  # the empty road has neither


@pytest.mark.parametrize("face_w", [100, 160, 240, 330])
def test_faces_of_every_size_are_found(road, face_w):
    """Faces 30 to 100 px wide in the 384-px detection frame: the first octave (window up to
    twice the cascade's 24 px), its boundary (48 px) and the halved octaves all find them."""
    frame = cv2.resize(road, (1280, 720), interpolation=cv2.INTER_LINEAR)
    fc = cv2.resize(face_crop(), (face_w * 2, round(face_w * 2 * 168 / 160)), interpolation=cv2.INTER_AREA)
    x, y = 200, 10
    frame[y : y + fc.shape[0], x : x + fc.shape[1]] = fc
    faces = [b for k, b in PrivacyStage().detect(frame) if k == "face"]
    # the astronaut's face lies in the crop's middle half, about face_w wide
    hits = [b for b in faces if x + fc.shape[1] * 0.25 <= b[0] + b[2] / 2 <= x + fc.shape[1] * 0.75 and y <= b[1] + b[3] / 2 <= y + fc.shape[0] * 0.6]
    assert hits, f"no face found near the {face_w}-px face: {faces}"
    assert any(0.6 * face_w <= b[2] <= 1.6 * face_w for b in hits), hits


def test_one_octave_groups_as_opencv_does(road):
    """Where a detector's sizes fit in one octave, the raw hits grouped by _run are exactly what one
    detectMultiScale call returns (here plates 60 to 119 px wide in the 384-px frame)."""
    import dataclasses

    d = next(d for d in PrivacyStage(backend="haar").detectors if d.name == "plate")
    d = dataclasses.replace(d, max_width_share=119.5 / 384)  # widths up to 119 px: the first octave only
    found = 0
    for pw in (110, 130, 150):
        g = road.copy()
        x, y, h = 300, 250, pw // 4
        cv2.rectangle(g, (x, y), (x + pw, y + h), (250, 250, 250), -1)
        cv2.rectangle(g, (x, y), (x + pw, y + h), (0, 0, 0), 2)
        cv2.putText(g, "A123BC77", (x + 5, y + h - 8), cv2.FONT_HERSHEY_SIMPLEX, pw / 200, (0, 0, 0), 2, cv2.LINE_AA)
        grey = cv2.resize(cv2.cvtColor(g, cv2.COLOR_RGB2GRAY), (384, 216), interpolation=cv2.INTER_AREA)
        ours = sorted(map(tuple, d._run(grey).tolist()))
        cv = d.classifier().detectMultiScale(grey, scaleFactor=d.scale_factor, minNeighbors=d.min_neighbors, minSize=d.min_size, maxSize=(119, 39))
        assert ours == sorted(map(tuple, np.asarray(cv).reshape(-1, 4).tolist()))
        found += len(ours)
    assert found  # and plates are found


@pytest.mark.parametrize("backend,detect_every", [("learned", 1), ("learned", 4), ("haar", 1), ("haar", 2), ("haar", 4)])
def test_stage_blurs_every_frame_before_jpeg(road, backend, detect_every):
    original = scene(road)
    # 5 samples: distinct frame objects plus two samples sharing one frame (as ClipFrames does)
    def camera_frames() -> list[np.ndarray | None]:
        frames: list[np.ndarray | None] = [original.copy() for _ in range(4)]
        frames.insert(2, frames[1])
        frames.append(None)
        return frames

    clip = clip_frames(np.arange(6, dtype=np.int64) * 100_000_000, ["front", "rear"], {"front": camera_frames(), "rear": camera_frames()})
    stage = PrivacyStage(backend=backend, detect_every=detect_every)
    record = {"clip_id": "clip-1", "start_utc_ns": 0}
    rows = stage(clip=clip, telemetry={}, drive=None, record=record)
    rec = record["privacy"]
    assert rec["enabled"] is True and rec["frames_processed"] == 8  # 4 distinct frames x 2 cameras
    assert rec["regions_blurred"] >= 2 * 8
    if backend == "haar":
        assert rec["detector"]["cascades"]["face"].startswith("haarcascade_frontalface_default")
    else:
        assert {k: m["model"] for k, m in rec["detector"]["models"].items()} == {"face": "centerface", "plate": "ppocr_det"}
    assert rows == [{"clip_id": "clip-1", "labeller": "privacy", "labeller_version": privacy.PRIVACY_VERSION, "label": "regions_blurred", "value": None, "score": float(rec["regions_blurred"])}]

    boxes = [b for _, b in stage.detect(original)]
    padded = [pad_box(b, stage.padding, original.shape) for b in boxes]
    outside = np.ones(original.shape[:2], bool)
    for x, y, w, h in padded:
        outside[y : y + h, x : x + w] = False
    fx, fy = FACE_AT
    face_box = (fx + 30, fy + 30, 90, 100)
    px, py, pw, ph = PLATE_BOX
    plate_box = (px + 4, py + 4, pw - 8, ph - 8)
    ref = jpeg_roundtrip(original)
    for cam in ("front", "rear"):
        assert clip.frames[cam][5] is None
        assert clip.frames[cam][1] is clip.frames[cam][2]
        for f in clip.frames[cam][:5]:
            # raw frame: untouched outside the padded boxes, byte for byte
            np.testing.assert_array_equal(f[outside], original[outside])
            dec = jpeg_roundtrip(f)
            # the face and the plate lost their detail in the JPEG the clip store writes
            assert hf_energy(dec, face_box) < hf_energy(ref, face_box) / 5
            assert hf_energy(dec, plate_box) < hf_energy(ref, plate_box) / 5
            # elsewhere the JPEG matches the unblurred one (away from block bleed at box edges)
            far = cv2.erode(outside.astype(np.uint8), np.ones((33, 33), np.uint8)).astype(bool)
            diff = np.abs(dec.astype(np.int16) - ref.astype(np.int16))[far]
            assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 8


def test_boxes_between_detections_are_carried_and_interpolated():
    stage = PrivacyStage(detect_every=4)
    calls = []

    def detect(j):  # a face moving 10 px per frame; a plate seen only on frame 4
        calls.append(j)
        out = [("face", (100 + 10 * j, 50, 40, 40))]
        return out + ([("plate", (300, 200, 60, 20))] if j == 4 else [])

    per = stage.boxes_per_frame(10, detect)
    # every 4th distinct frame and the last one; then 2 frames either side of frame 4, where the
    # plate was seen once (refinement: a second sighting would give it a velocity)
    assert calls == [0, 4, 8, 9, 2, 6]
    for j in range(10):
        assert (100 + 10 * j, 50, 40, 40) in per[j]  # where the face is, interpolated or detected
        assert ((300, 200, 60, 20) in per[j]) == (0 <= j <= 8)  # carried 4 frames either side
    assert per[2] == sorted(per[2])
    # no match (moved more than its size per frame, or another kind): carried, never interpolated
    per = stage.boxes_per_frame(5, lambda j: [("face", (0, 0, 20, 20))] if j == 0 else [("plate", (500, 0, 20, 20))])
    assert per[2] == [(0, 0, 20, 20), (500, 0, 20, 20)]
    per = stage.boxes_per_frame(5, lambda j: [("face", (0, 0, 20, 20))] if j == 0 else [("face", (500, 0, 20, 20))])
    assert per[2] == [(0, 0, 20, 20), (500, 0, 20, 20)]
    # detect_every=1: every frame is detected; on a frame where the detector flickers off, the
    # neighbours' boxes and the box interpolated between them (where the face is) are blurred
    calls.clear()
    per = PrivacyStage(detect_every=1).boxes_per_frame(3, lambda j: calls.append(j) or ([("face", (3 * j, 0, 5, 5))] if j != 1 else []))
    assert calls == [0, 1, 2] and per == [[(0, 0, 5, 5)], [(0, 0, 5, 5), (3, 0, 5, 5), (6, 0, 5, 5)], [(6, 0, 5, 5)]]


def test_boxes_coast_on_where_the_next_detection_misses_or_the_object_turns():
    stage = PrivacyStage(detect_every=4)

    def x_at(j):  # a face moving right 10 px per frame until frame 6, then back left
        return 100 + 10 * min(j, 6) - 10 * max(0, j - 6)

    # the detector misses it on frame 8 and on the last frame: the box found on frame 4 moves on at
    # the velocity of its match (frame 0 -> 4) for 4 more frames
    per = stage.boxes_per_frame(10, lambda j: [("face", (100 + 10 * j, 50, 40, 40))] if j in (0, 4) else [])
    for j in range(9):
        assert (100 + 10 * j, 50, 40, 40) in per[j]
    assert per[9] == []  # coasting stops detect_every frames after the last sighting
    # it turns between two detections (4 -> 8): interpolation alone would keep it at x=140; the box
    # of frame 4 coasting forwards and the box of frame 8 coasting backwards cover where it is
    per = stage.boxes_per_frame(10, lambda j: [("face", (x_at(j), 50, 40, 40))])
    assert (140, 50, 40, 40) in per[6]  # the interpolated box: not where the face is
    for j in range(10):
        assert (x_at(j), 50, 40, 40) in per[j]
    # a box without a match has no velocity: carried in place only
    per = stage.boxes_per_frame(9, lambda j: [("face", (300, 50, 40, 40))] if j == 4 else [])
    assert all(p == [(300, 50, 40, 40)] for p in per)


def test_an_object_seen_once_is_looked_for_again_half_way_to_the_next_detections():
    stage = PrivacyStage(detect_every=6)
    calls = []

    def detect(j):  # a face in view on frames 4-9 only, moving 10 px per frame
        calls.append(j)
        return [("face", (100 + 10 * j, 50, 40, 40))] if 4 <= j <= 9 else []

    per = stage.boxes_per_frame(16, detect)
    assert calls == [0, 6, 12, 15, 3, 9]  # seen on 6 alone: frames 3 and 9 are detected too
    for j in range(4, 10):  # matched 6 -> 9: interpolated, and coasting back to where it came in
        assert (100 + 10 * j, 50, 40, 40) in per[j]
    # nothing seen: no extra detections
    calls.clear()
    stage.boxes_per_frame(16, lambda j: calls.append(j) or [])
    assert calls == [0, 6, 12, 15]
    assert PrivacyStage(detect_every=1).refinement_frames(5, {j: [("face", (0, 0, 9, 9))] for j in range(0, 5, 2)}) == []


def test_moving_face_blurred_on_frames_between_detections(road):
    """A real face crossing the frame 30 px per frame: the frames between two detections are
    blurred where the face is (JPEG detail gone), with detection on every 4th frame only."""
    fc = face_crop()
    originals = []
    for j in range(9):
        f = road.copy()
        x = 40 + 30 * j
        f[40 : 40 + fc.shape[0], x : x + fc.shape[1]] = fc
        originals.append(f)
    clip = make_clip([f.copy() for f in originals])
    stage = PrivacyStage(detect_every=4)
    stage(clip=clip, telemetry={}, drive=None, record={"clip_id": "moving"})
    for j, (f, ref) in enumerate(zip(clip.frames["front"], originals)):
        box = (40 + 30 * j + 42, 82, 76, 76)  # the face inside the crop at this frame
        assert hf_energy(jpeg_roundtrip(f), box) < hf_energy(jpeg_roundtrip(ref), box) / 5, f"frame {j}"


def test_read_only_frames_are_replaced_not_passed_through(road):
    f = scene(road)
    f.flags.writeable = False
    clip = make_clip([f, f])
    PrivacyStage().__call__(clip=clip, telemetry={}, drive=None, record={"clip_id": "c"})
    out = clip.frames["front"]
    assert out[0] is out[1] and out[0] is not f
    assert hf_energy(out[0], (PLATE_BOX[0] + 4, PLATE_BOX[1] + 4, 160, 34)) < hf_energy(f, (PLATE_BOX[0] + 4, PLATE_BOX[1] + 4, 160, 34)) / 5


def test_registered_stage(road):
    (stage,) = build_stages(["privacy"])
    assert isinstance(stage, PrivacyStage) and stage.load_error is None
    record = {"clip_id": "c2", "start_utc_ns": 0}
    stage(clip=make_clip([road.copy()]), telemetry={}, drive=None, record=record)
    assert record["privacy"]["enabled"] is True and record["privacy"]["regions_blurred"] == 0


def test_missing_cascade_quarantines(road, tmp_path, monkeypatch):
    monkeypatch.setattr(privacy, "VENDORED_CASCADES", tmp_path / "nowhere")
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path / "nowhere-either"), raising=False)
    stage = PrivacyStage(backend="haar")
    assert stage.load_error and "not found" in stage.load_error
    f = scene(road)
    before = f.copy()
    with pytest.raises(PrivacyError, match="clip c3.*not found") as ei:
        stage(clip=make_clip([f]), telemetry={}, drive=None, record={"clip_id": "c3"})
    assert isinstance(ei.value, FleetError) and ei.value.clip_id == "c3"
    np.testing.assert_array_equal(f, before)


def test_corrupt_cascade_quarantines(road, tmp_path):
    (tmp_path / "haarcascade_frontalface_default.xml").write_text("<?xml version='1.0'?><opencv_storage></opencv_storage>")
    stage = PrivacyStage(backend="haar", cascade_dirs=[tmp_path])
    assert stage.load_error and "failed to load" in stage.load_error
    with pytest.raises(PrivacyError):
        stage(clip=make_clip([scene(road)]), telemetry={}, drive=None, record={"clip_id": "c4"})


def test_detector_raising_quarantines(road):
    class Exploding:
        def detectMultiScale(self, *a, **k):
            raise cv2.error("detector crashed")

    stage = PrivacyStage(backend="haar", threads=1)
    stage.detectors[-1].cascade = Exploding()
    with pytest.raises(PrivacyError, match="detection failed.*detector crashed"):
        stage(clip=make_clip([scene(road)]), telemetry={}, drive=None, record={"clip_id": "c5"})


def test_detector_raising_on_a_worker_thread_quarantines(road, monkeypatch):
    """With several threads, detection of every camera's detection frames is spread over a pool;
    a failure there still quarantines the clip, naming the camera, and nothing is blurred half-way."""
    stage = PrivacyStage(backend="haar", threads=2, detect_every=1)
    real = stage.detect
    bad = scene(road)

    def detect(frame):
        if frame is bad:
            raise cv2.error("detector crashed")
        return real(frame)

    monkeypatch.setattr(stage, "detect", detect)
    frames = {"front": [scene(road) for _ in range(3)], "rear": [scene(road), bad, scene(road)]}
    clip = clip_frames(np.arange(3, dtype=np.int64), ["front", "rear"], frames)
    before = {c: [f.tobytes() for f in fs] for c, fs in clip.frames.items()}
    with pytest.raises(PrivacyError, match="camera rear: detection failed.*detector crashed"):
        stage(clip=clip, telemetry={}, drive=None, record={"clip_id": "c6"})
    assert {c: [f.tobytes() for f in fs] for c, fs in clip.frames.items()} == before


def test_refinement_runs_on_the_detection_threads_and_gives_one_threads_bytes(road):
    """A face seen on one detection frame only: the refinement frames half way to its neighbours
    are detected in a second wave on the stage's threads, and the blurred bytes equal one thread's."""
    import threading

    def run(threads: int) -> tuple[list[bytes], dict[int, str]]:
        stage = PrivacyStage(backend="haar", threads=threads, detect_every=4)
        frames = [road.copy() for _ in range(9)]
        frames[4] = scene(road)  # detection frames 0, 4, 8: the face and plate only on 4
        where: dict[int, str] = {}
        real = stage.detect

        def detect(frame):
            where[next(j for j, f in enumerate(frames) if f is frame)] = threading.current_thread().name
            return real(frame)

        stage.detect = detect  # type: ignore[method-assign]
        clip = make_clip(frames)
        rec: dict = {"clip_id": "refine"}
        stage(clip=clip, telemetry={}, drive=None, record=rec)
        assert rec["privacy"]["regions_blurred"] > 0
        return [f.tobytes() for f in clip.frames["front"]], where

    one, where1 = run(1)
    two, where2 = run(2)
    assert sorted(where1) == sorted(where2) == [0, 2, 4, 6, 8]  # 2 and 6: the refinement frames
    assert all(where2[j].startswith("privacy") for j in (2, 6))
    assert two == one


def test_privacy_options_from_a_file_build_the_stage(tmp_path):
    from fleetcore.errors import ConfigError

    cfg = tmp_path / "privacy.yaml"
    cfg.write_text("backend: haar\ndetectors: [face, plate]\ndetect_every: 3\nmode: pixelate\n")
    opts = PrivacyOptions.from_file(cfg)
    assert opts == PrivacyOptions(backend="haar", detectors=["face", "plate"], detect_every=3, mode="pixelate")  # lists stored as tuples
    (stage,) = build_stages(["privacy"], options={"privacy": opts})
    d = stage.describe()
    assert sorted(d["cascades"]) == ["face", "plate"] and d["detect_every"] == 3 and d["mode"] == "pixelate"
    (default,) = build_stages(["privacy"])  # no options: PrivacyOptions()' defaults
    assert default.describe() == PrivacyStage().describe() and default.detect_every == PrivacyOptions().detect_every
    cfg.write_text("detect_evry: 3\n")
    with pytest.raises(ConfigError, match="^" + re.escape(f"{cfg}: detect_evry: unknown key")):
        PrivacyOptions.from_file(cfg)
    cfg.write_text("backend: haar\nequalize: true\nthreads: null\npadding: 0\n")
    (stage,) = build_stages(["privacy"], options={"privacy": PrivacyOptions.from_file(cfg)})
    assert stage.equalize is True and stage.threads >= 1 and stage.describe()["equalize"] is True and stage.padding == 0.0
    for bad, field in (("equalize: maybe\n", "equalize"), ("threads: 0\n", "threads"), ("detectors: face\n", "detectors"),
                       ("mode: blur\n", "mode"), ("padding: -1\n", "padding"), ("backend: cnn\n", "backend"),
                       ("detectors: [face_profile]\n", "detectors"), ("face_scales: [9]\n", "face_scales"),
                       ("face_threshold: 0\n", "face_threshold"), ("device: tpu\n", "device")):
        cfg.write_text(bad)
        with pytest.raises(ConfigError, match="^" + re.escape(f"{cfg}: {field}: ")) as err:
            PrivacyOptions.from_file(cfg)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="^<privacy options>: detect_every: expected an integer >= 1, got 0$"):
        PrivacyOptions(detect_every=0)


def test_pixelate_mode_blurs(road):
    f = scene(road)
    ref = f.copy()
    clip = make_clip([f])
    PrivacyStage(mode="pixelate")(clip=clip, telemetry={}, drive=None, record={"clip_id": "c6"})
    px, py, pw, ph = PLATE_BOX
    box = (px + 4, py + 4, pw - 8, ph - 8)
    assert hf_energy(clip.frames["front"][0], box) < hf_energy(ref, box) / 5


def test_deterministic_and_empty_cameras(road):
    outs = []
    for _ in range(2):
        clip = clip_frames(np.arange(3, dtype=np.int64), ["front", "dead"], {"front": [scene(road), None, scene(road)], "dead": [None, None, None]})
        rec: dict = {"clip_id": "c7"}
        PrivacyStage(detectors=["face", "plate"])(clip=clip, telemetry={}, drive=None, record=rec)
        outs.append((clip.frames["front"][0].tobytes(), clip.frames["front"][2].tobytes(), rec["privacy"]["regions_blurred"], rec["privacy"]["frames_processed"]))
    assert outs[0] == outs[1] and outs[0][3] == 2


def test_cameras_in_parallel_threads_give_the_same_bytes(road):
    """Cameras are anonymised on several threads (each with its own CascadeClassifier: one shared
    by two threads corrupts both detections); the blurred bytes equal a one-thread run."""
    def run(threads: int) -> list[bytes]:
        cams = [f"cam{i}" for i in range(4)]
        frames = {c: [scene(road) for _ in range(6)] for c in cams}
        clip = clip_frames(np.arange(6, dtype=np.int64), cams, frames)
        rec: dict = {"clip_id": "par"}
        PrivacyStage(backend="haar", threads=threads, detect_every=1)(clip=clip, telemetry={}, drive=None, record=rec)
        assert rec["privacy"]["regions_blurred"] >= 2 * 24
        return [f.tobytes() for c in cams for f in clip.frames[c]]

    one = run(1)
    for _ in range(3):
        assert run(4) == one


def test_learned_batches_give_one_frames_bytes(road):
    """The learned backend batches the detection frames of all cameras: the bytes do not depend on
    the batch size (nor on the number of onnxruntime threads)."""
    def run(**kw) -> list[bytes]:
        frames = {c: [road.copy() if j == 3 else scene(road) for j in range(7)] for c in ("front", "rear")}
        clip = clip_frames(np.arange(7, dtype=np.int64), ["front", "rear"], frames)
        rec: dict = {"clip_id": "batch"}
        PrivacyStage(detect_every=2, **kw)(clip=clip, telemetry={}, drive=None, record=rec)
        assert rec["privacy"]["regions_blurred"] > 0 and rec["privacy"]["detector"]["backend"] == "learned"
        return [f.tobytes() for c in ("front", "rear") for f in clip.frames[c]]

    one = run(batch_size=1, threads=1)
    assert run(batch_size=8, threads=2) == one


def test_learned_batch_size_follows_the_device():
    """Unset, the batch is one frame on the CPU (a batch of large frames runs slower per frame
    there) and 8 on CUDA; a set batch_size is kept; a bad one is a ConfigError naming the field."""
    cpu = PrivacyStage(device="cpu")
    assert cpu.load_error is None and cpu.batch_size == 1
    assert PrivacyStage(device="cpu", batch_size=4).batch_size == 4
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert PrivacyStage.from_options(PrivacyOptions()).batch_size == (8 if cuda else 1)
    with pytest.raises(ConfigError, match="batch_size"):
        PrivacyOptions(batch_size=0)


def test_a_model_file_with_other_bytes_quarantines(road, tmp_path):
    (tmp_path / "centerface.onnx").write_bytes(b"not the pinned model")
    stage = PrivacyStage(model_dirs=[str(tmp_path)])
    assert stage.load_error and "sha256" in stage.load_error and "fleet models install" in stage.load_error
    f = scene(road)
    before = f.copy()
    with pytest.raises(PrivacyError, match="clip c9.*sha256"):
        stage(clip=make_clip([f]), telemetry={}, drive=None, record={"clip_id": "c9"})
    np.testing.assert_array_equal(f, before)


@pytest.mark.parametrize("mode", ["gaussian", "pixelate"])
def test_blur_keeps_nothing_finer_than_a_sixth_of_the_box(mode):
    """Two regions with the same average over each sixth of the box blur to the same bytes: detail
    finer than a cell cannot be recovered, whatever the box's size (a 36-px box and a 360-px one)."""
    rng = np.random.default_rng(0)
    for side in (36, 360):
        cell = side // 6
        a = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        # b: the pixels of every cell of a, shuffled within the cell (same cell averages)
        b = a.copy()
        for cy in range(6):
            for cx in range(6):
                blk = b[cy * cell:(cy + 1) * cell, cx * cell:(cx + 1) * cell].reshape(-1, 3)
                b[cy * cell:(cy + 1) * cell, cx * cell:(cx + 1) * cell] = rng.permutation(blk).reshape(cell, cell, 3)
        assert not np.array_equal(a, b)
        fa, fb = a.copy(), b.copy()
        privacy.blur_region(fa, (0, 0, side, side), mode)
        privacy.blur_region(fb, (0, 0, side, side), mode)
        np.testing.assert_array_equal(fa, fb)


def test_fill_mode_paints_the_box_black(road):
    f = scene(road)
    clip = make_clip([f])
    stage = PrivacyStage(mode="fill")
    stage(clip=clip, telemetry={}, drive=None, record={"clip_id": "fill"})
    out = clip.frames["front"][0]
    boxes = [pad_box(b, stage.padding, f.shape) for _, b in stage.detect(scene(road))]
    assert boxes
    for x, y, w, h in boxes:
        assert not out[y:y + h, x:x + w].any()


def test_cpu_fallback_is_logged_once_and_cuda_gives_the_cpu_boxes(road, caplog):
    """Without CUDA the detectors run on the CPU and one log line says so; where onnxruntime offers
    the CUDA provider (onnxruntime-gpu on a GPU machine) the boxes match the CPU's within a pixel."""
    import logging

    import onnxruntime as ort

    from fleetcore.stages import learned

    have_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    learned._provider_logged.clear()
    with caplog.at_level(logging.INFO, logger="fleetcore.stages.learned"):
        chosen = learned.providers("auto")
        learned.providers("auto")
    lines = [r.getMessage() for r in caplog.records if r.name == "fleetcore.stages.learned"]
    assert len(lines) == 1
    if not have_cuda:
        assert chosen == ["CPUExecutionProvider"] and "CPU" in lines[0]
        pytest.skip("no CUDA execution provider here: the CPU fallback is what was checked")
    assert chosen[0] == "CUDAExecutionProvider"
    f = scene(road)
    cpu = PrivacyStage(device="cpu").detect(f)
    gpu = PrivacyStage(device="cuda").detect(f)
    assert [k for k, _ in cpu] == [k for k, _ in gpu]
    assert all(max(abs(a - b) for a, b in zip(bc, bg)) <= 1 for (_, bc), (_, bg) in zip(cpu, gpu))
