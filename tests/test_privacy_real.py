"""Recall floors of the default privacy stage on real annotated photos, and its tracking on a video
made of real annotated faces, and one of real plates, moving across a real road frame.

The photos are the shared evaluation set (``../shared/data/real/privacy``: WIDER FACE validation
faces, openalpr benchmark plates; non-commercial / copyleft terms, read from there, never copied
into the repository). Floors at the 640-px frames the curate job stores (a face or plate counts as
blurred when half its box is covered): faces of 24 px and more >= 0.97, faces of 10-24 px >= 0.85,
plates of 24 px and more >= 0.90. These are quality floors, not timings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleetcore.stages.privacy import PrivacyStage, pad_box
from fleetcore.stages.privacy_eval import PLATE_BUCKETS, load_annotated, score
from fleetcore.video.extract import ClipFrames

INF = float("inf")


@pytest.fixture(scope="module")
def privacy_set(real_data: Path) -> Path:
    d = real_data / "privacy"
    if not (d / "faces" / "annotations.jsonl").is_file():
        pytest.skip(f"shared privacy evaluation set not found at {d}")
    return d


@pytest.fixture(scope="module")
def stage() -> PrivacyStage:
    st = PrivacyStage()
    assert st.load_error is None and st.backend == "learned"
    return st


def blurred(stage: PrivacyStage):
    return lambda rgb: [pad_box(b, stage.padding, rgb.shape) for _, b in stage.detect(rgb)]


def test_face_recall_floors(privacy_set, stage):
    s = score(load_annotated(privacy_set / "faces"), blurred(stage))
    assert s.buckets[(10, 24)][1] > 100 and s.buckets[(24, 48)][1] + s.buckets[(48, INF)][1] > 50  # the set is there
    assert s.recall(24, INF) >= 0.97, s.row()
    assert s.recall(10) >= 0.85, s.row()
    # blurred area outside the truth (both detectors run, as in the job): the goal is 2 %
    assert s.false_area <= 0.025, s.row()


def test_plate_recall_floor(privacy_set, stage):
    s = score(load_annotated(privacy_set / "plates"), blurred(stage), buckets=PLATE_BUCKETS)
    assert sum(v[1] for v in s.buckets.values()) >= 40
    assert s.recall(24, INF) >= 0.90, s.row()
    assert s.false_area <= 0.02, s.row()


def test_haar_fallback_is_what_it_was(privacy_set):
    """The fallback stays selectable, and the learned default is far better on the same faces."""
    s = score(load_annotated(privacy_set / "faces"), blurred(PrivacyStage(backend="haar")))
    assert 0.05 < s.recall(24, INF) < 0.5  # it still runs and finds some, far fewer than the learned default


def real_crops(stage: PrivacyStage, folder: Path, *, lo: int, hi: int, min_side: int, want: int) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
    """``want`` real annotated objects of ``lo``-``hi`` px (longer side at 640 px; the shorter at least
    ``min_side``) that the stage finds
    in their own photo (tracking is what is measured, not recall), each cut with half its size of
    context around it: (crop, the object's box in the crop)."""
    out = []
    for im in load_annotated(folder):
        if len(out) == want:
            break
        found = stage.detect(im.rgb)
        for x0, y0, x1, y1 in im.boxes:
            hit = any(bx <= (x0 + x1) / 2 <= bx + bw and by <= (y0 + y1) / 2 <= by + bh for _, (bx, by, bw, bh) in found)
            m = 0.5 * max(x1 - x0, y1 - y0)  # some context around the object, as in a real scene
            inside = x0 - m >= 0 and y0 - m >= 0 and x1 + m <= im.rgb.shape[1] and y1 + m <= im.rgb.shape[0]
            if lo <= max(x1 - x0, y1 - y0) <= hi and min(x1 - x0, y1 - y0) >= min_side and hit and inside and len(out) < want:
                a, b = int(max(0, x0 - m)), int(max(0, y0 - m))
                crop = im.rgb[b : int(min(im.rgb.shape[0], y1 + m)), a : int(min(im.rgb.shape[1], x1 + m))]
                out.append((crop, (x0 - a, y0 - b, x1 - a, y1 - b)))
    return out


@pytest.mark.parametrize("kind", ["faces", "plates"])
def test_real_objects_moving_across_frames_stay_blurred_between_detections(privacy_set, real_data, stage, kind):
    """Real annotated faces (24-80 px) cut from the WIDER photos, or real plates (40-64 px) cut from
    the openalpr photos, four of each that the detector finds in their photo, are moved 6 px per
    sample across a real road frame for 30 samples; detection runs on every 6th sample (the default)
    and the tracking carries, interpolates and coasts the boxes in between. Every face or plate is
    at least half covered on at least 97 % of the frames where it is in view. (Smaller plates are
    left to the recall floor on their own photos: a 29-px plate pasted against the sky is found on
    only some detection frames, which is the detector's recall at that size, not the tracking.)"""
    import av
    import cv2

    with av.open(str(real_data / "video" / "udacity_lanelines_solidWhiteRight.mp4")) as c:
        road = cv2.resize(next(iter(c.decode(video=0))).to_ndarray(format="rgb24"), (640, 360), interpolation=cv2.INTER_AREA)
    objects = real_crops(stage, privacy_set / kind, lo=24 if kind == "faces" else 40, hi=80 if kind == "faces" else 64, min_side=16 if kind == "faces" else 8, want=4)
    assert len(objects) == 4
    n = 30
    frames, truth = [], []
    for j in range(n):
        f = road.copy()
        boxes = []
        for k, (crop, (fx0, fy0, fx1, fy1)) in enumerate(objects):
            x, y = 20 + 6 * j + 300 * (k % 2), 20 + 170 * (k // 2)
            h, w = crop.shape[:2]
            f[y : y + h, x : x + w] = crop
            boxes.append((x + fx0, y + fy0, x + fx1, y + fy1))
        frames.append(f)
        truth.append(boxes)
    clip = ClipFrames(np.arange(n, dtype=np.int64) * 100_000_000, ["front"], {"front": [f.copy() for f in frames]}, pts_ns={}, offset_ns={})
    calls = []
    real = stage.detect_many

    def counting(batch):
        calls.append(len(batch))
        return real(batch)

    st = PrivacyStage()
    st.detect_many = counting  # type: ignore[method-assign]
    st(clip=clip, telemetry={}, drive=None, record={"clip_id": f"moving-real-{kind}"})
    assert sum(calls) < n / 2  # detection ran on a few frames only
    covered = np.zeros((n, len(objects)), bool)
    for j, (orig, out) in enumerate(zip(frames, clip.frames["front"])):
        changed = np.any(orig != out, axis=2)
        for k, (x0, y0, x1, y1) in enumerate(truth[j]):
            covered[j, k] = changed[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))].mean() >= 0.5
    assert covered.mean(axis=0).min() >= 0.97, covered.mean(axis=0)


def test_night_road_frames_are_not_blurred_where_nothing_is(real_data, stage):
    """Real highway frames (the cars ahead too far for a readable plate, no people) as a night camera
    sees them: a short exposure with black sky and lamps, and a city night with a glowing sky, lamps
    and a dashcam's white date overlay. The default stage blurs almost nothing there (under 0.5 % of
    the frame on average, under 3 % on any frame)."""
    import av
    import cv2

    with av.open(str(real_data / "video" / "udacity_lanelines_solidWhiteRight.mp4")) as c:
        road = [cv2.resize(f.to_ndarray(format="rgb24"), (640, 360), interpolation=cv2.INTER_AREA)
                for i, f in enumerate(c.decode(video=0)) if i % 5 == 0]
    rng = np.random.default_rng(0)
    lamps = ((60, 90), (160, 110), (300, 100), (460, 95), (600, 120), (250, 250), (390, 250))

    def short_exposure(f: np.ndarray) -> np.ndarray:
        g = (f.astype(np.float32) / 255.0) ** 2.2 * 255.0 / 6.0
        g[: int(f.shape[0] * 0.45)] *= 0.25
        return g.clip(0, 255).astype(np.uint8)

    def city(f: np.ndarray) -> np.ndarray:
        g = (f.astype(np.float32) / 255.0) ** 1.6 * 255.0 / 2.5
        top = int(f.shape[0] * 0.45)
        g[:top] = g[:top] * 0.3 + 45 + rng.normal(0, 8, g[:top].shape)
        n = g.clip(0, 255).astype(np.uint8)
        cv2.putText(n, "2019/03/02 22:14:05  057 km/h", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
        return n

    for look in (short_exposure, city):
        areas = []
        for f in road:
            n = look(f)
            for x, y in lamps:
                cv2.circle(n, (x, y), 5, (255, 245, 220), -1)
            mask = np.zeros(n.shape[:2], bool)
            for _, b in stage.detect(n):
                x, y, w, h = (int(v) for v in pad_box(b, stage.padding, n.shape))
                mask[y : y + h, x : x + w] = True
            areas.append(mask.mean())
        assert len(areas) >= 40 and np.mean(areas) < 0.005 and max(areas) < 0.03, (look.__name__, np.mean(areas), max(areas))
