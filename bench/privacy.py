"""Privacy: recall on real annotated photos per detector, and coverage between detections (a
benchmark, not a test).

    .venv/bin/python bench/privacy.py [--json OUT] [--set DIR] [--every 6] [--no-tracks]

(i) **Real annotated photos** (``--set``, default ``../shared/data/real/privacy``: WIDER FACE
validation faces, openalpr benchmark plates, MOT17 street frames; evaluation only, never copied
into the repository), shrunk to the job's 640-px frames. For each detector setting, both face and
plate detection run on every image (as in the job); a face or plate counts as blurred when half
its box lies inside the padded boxes the stage blurs (``fleetcore.stages.privacy_eval``). Columns:
found / total per size bucket (the box's longer side at 640 px), the blurred area outside the
truth (mean share of the image) on the faces and on the plates images, and wall milliseconds per
frame of the detection as run (onnxruntime's threads: every CPU). Goals: faces >= 24 px recall >=
0.97, faces 10-24 px >= 0.85, plates >= 24 px >= 0.90, false area <= 2 %. Pedestrians: the HOG
people detector of the ``pedestrians`` labeller on the MOT17 frames, recall and precision at IoU
0.5 (no well-kept package ships a learned person detector without a download).

(ii) **Coverage between detections** (skipped with ``--no-tracks``): tracks are pasted into the
shared real road videos (Udacity, resized to the 640-px store frame
and resampled to the default 10 Hz sample rate): scikit-image's ``astronaut`` head (a real face,
about 40, 60, 80 and 120 px wide; ``--face-sizes``) and a drawn plate (100, 130 and 168 px wide;
``--plate-sizes``; scored on the box of its characters, what identifies it), each still, moving
10 px per sample or 30 px per sample across the frame (bouncing off its edges); and brief
appearances: the 60-px face and the 130-px plate in view for only 3, 6 or 10 samples, starting at
each of 8 successive samples (every phase of the detection schedule up to ``detect_every`` 8). For
each ``detect_every`` the privacy stage's own ``boxes_per_frame`` gives the padded boxes blurred
on every frame; a track's frame counts as covered when at least 90 % of the object's box lies
inside them. Columns: per-frame coverage of faces and plates on the whole-length tracks, the
same on the brief appearances, the blurred area per object area on the whole-length tracks (what
the padding, carrying over, interpolation and coasting blur beyond the object itself),
milliseconds of privacy work per frame (CPU time of this thread), and frames per second.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fleetcore.stages.privacy import PrivacyStage, pad_box  # noqa: E402
from fleetcore.stages.privacy_eval import FACE_BUCKETS, PLATE_BUCKETS, load_annotated, score  # noqa: E402

log = logging.getLogger("bench.privacy")
VIDEOS = REPO.parent / "shared" / "data" / "real" / "video"
PRIVACY_SET = REPO.parent / "shared" / "data" / "real" / "privacy"
INF = float("inf")

#: the detector settings compared on the real set: name -> PrivacyStage options
SETTINGS: dict[str, dict[str, Any]] = {
    "haar (backend=haar, the fallback)": {"backend": "haar"},
    "learned (default): CenterFace x1.5 th 0.15 + PP-OCR plates": {},
    "learned, faces x1.0 + x1.5, th 0.2": {"face_scales": (1.0, 1.5), "face_threshold": 0.2},
    "learned, faces x1.0 only, th 0.2": {"face_scales": (1.0,), "face_threshold": 0.2},
}
GOALS = {"faces >= 24 px": 0.97, "faces 10-24 px": 0.85, "plates >= 24 px": 0.90, "false area": 0.02}


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def pedestrians(folder: Path) -> dict[str, Any]:
    """The pedestrians labeller's HOG detector on MOT17 frames at 640 px: recall and precision at IoU 0.5
    (greedy matching by score; detections inside ignore regions are not counted)."""
    from fleetcore.labels.vision import PedestrianLabeller

    lab = PedestrianLabeller()
    tp = fp = total = 0
    t0 = time.perf_counter()
    images = load_annotated(folder)  # the 640-px frames the labeller gets in the job
    for im in images:
        dets = [(x, y, x + w, y + h, sc) for x, y, w, h, sc in sorted(lab.detect(np.ascontiguousarray(im.rgb)), key=lambda d: -d[4])]
        truth = list(im.boxes)
        total += len(truth)
        used = [False] * len(truth)
        for x0, y0, x1, y1, _ in dets:
            best, bi = 0.0, -1
            for i, t in enumerate(truth):
                v = _iou((x0, y0, x1, y1), t)
                if not used[i] and v > best:
                    best, bi = v, i
            if best >= 0.5:
                used[bi] = True
                tp += 1
            elif not any(_iou((x0, y0, x1, y1), g) >= 0.5 for g in im.ignore):
                fp += 1
    return {"detector": "HOG + linear SVM (OpenCV default people detector)", "images": len(images), "boxes": total,
            "recall": tp / max(1, total), "precision": tp / max(1, tp + fp),
            "ms_per_frame": 1000 * (time.perf_counter() - t0) / max(1, len(images))}


def real_set(folder: Path) -> dict[str, Any]:
    faces = load_annotated(folder / "faces")
    plates = load_annotated(folder / "plates")
    rows = []
    for name, opts in SETTINGS.items():
        stage = PrivacyStage(**opts)
        if stage.load_error:
            raise SystemExit(f"{name}: {stage.load_error}")

        def blurred(rgb: np.ndarray, st: PrivacyStage = stage) -> list[tuple[int, int, int, int]]:
            return [pad_box(b, st.padding, rgb.shape) for _, b in st.detect(rgb)]

        blurred(faces[0].rgb)  # warm-up: sessions and thread pools
        f, p = score(faces, blurred, buckets=FACE_BUCKETS), score(plates, blurred, buckets=PLATE_BUCKETS)
        rows.append({
            "detector": name, "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
            "faces": {k: f.row()[k] for k in ("10-24", "24-48", ">=48")}, "plates": {k: p.row()[k] for k in ("24-48", ">=48")},
            "recall_faces_10_24": f.recall(10), "recall_faces_24_up": f.recall(24, INF), "recall_plates_24_up": p.recall(24, INF),
            "false_area_faces": f.false_area, "false_area_plates": p.false_area,
            "ms_per_frame_faces": f.ms_per_frame, "ms_per_frame_plates": p.ms_per_frame,
        })
    out: dict[str, Any] = {"set": str(folder), "faces_images": len(faces), "plates_images": len(plates), "rows": rows}
    if (folder / "pedestrians" / "annotations.jsonl").is_file():
        out["pedestrians"] = pedestrians(folder / "pedestrians")
    d = rows[1]
    out["goals"] = [
        {"figure": "privacy: faces >= 24 px recall (default)", "value": round(d["recall_faces_24_up"], 3), "goal": ">= 0.97",
         "met": d["recall_faces_24_up"] >= GOALS["faces >= 24 px"]},
        {"figure": "privacy: faces 10-24 px recall (default)", "value": round(d["recall_faces_10_24"], 3), "goal": ">= 0.85",
         "met": d["recall_faces_10_24"] >= GOALS["faces 10-24 px"]},
        {"figure": "privacy: plates >= 24 px recall (default)", "value": round(d["recall_plates_24_up"], 3), "goal": ">= 0.90",
         "met": d["recall_plates_24_up"] >= GOALS["plates >= 24 px"]},
        {"figure": "privacy: blurred area outside the truth (default, faces / plates images)",
         "value": f"{100 * d['false_area_faces']:.2f} % / {100 * d['false_area_plates']:.2f} %", "goal": "<= 2 %",
         "met": max(d["false_area_faces"], d["false_area_plates"]) <= GOALS["false area"] + 5e-5},
    ]
    return out


def print_real(res: dict[str, Any], console: Console) -> None:
    t = Table(title=f"privacy on real annotated photos at 640 px ({res['faces_images']} face images, {res['plates_images']} plate images; "
                    "blurred = half the box covered)")
    for col in ("detector", "faces 10-24 px", "faces 24-48 px", "faces >= 48 px", "plates 24-48 px", "plates >= 48 px",
                "false area faces %", "false area plates %", "ms/frame"):
        t.add_column(col, justify="right" if col != "detector" else "left")
    for r in res["rows"]:
        t.add_row(r["detector"], r["faces"]["10-24"], r["faces"]["24-48"], r["faces"][">=48"], r["plates"]["24-48"], r["plates"][">=48"],
                  f"{100 * r['false_area_faces']:.2f}", f"{100 * r['false_area_plates']:.2f}",
                  f"{(r['ms_per_frame_faces'] + r['ms_per_frame_plates']) / 2:.0f}")
    console.print(t)
    if "pedestrians" in res:
        p = res["pedestrians"]
        console.print(f"pedestrians ({p['detector']}) on {p['images']} MOT17 frames, {p['boxes']} boxes: recall {p['recall']:.2f}, "
                      f"precision {p['precision']:.2f} at IoU 0.5, {p['ms_per_frame']:.0f} ms/frame")
RATE_HZ = 10.0


def road_frames(path: Path, n: int) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        fps = float(st.average_rate or 25)
        step = fps / RATE_HZ
        want = 0.0
        for i, f in enumerate(c.decode(st)):
            if i + 0.5 < want:
                continue
            want += step
            a = f.to_ndarray(format="rgb24")
            h, w = a.shape[:2]
            s = 640 / max(h, w)
            out.append(cv2.resize(a, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA))
            if len(out) >= n:
                break
    return out


def face_patch(width: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The astronaut's head and shoulders, scaled so the face is about ``width`` px wide; the
    patch and the face box inside it."""
    from skimage import data as skdata

    img = skdata.astronaut()[20:220, 130:320]  # face at about (47, 46, 95, 95) in this crop
    s = width / 95
    patch = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    return patch, (round(47 * s), round(46 * s), round(95 * s), round(95 * s))


def plate_patch(width: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A drawn plate ``width`` px wide (white, a black rim, eight characters); the patch and the box
    of its characters inside it (what identifies a plate, and what coverage is scored on: the blank
    margin and the rim around them are not)."""
    h = round(width / 4)
    p = np.full((h, width, 3), 250, np.uint8)
    cv2.rectangle(p, (0, 0), (width - 1, h - 1), (0, 0, 0), max(1, round(width / 84)))
    text, font, scale, thick = "A123BC77", cv2.FONT_HERSHEY_SIMPLEX, 0.85 * width / 168, max(1, round(2 * width / 168))
    ox, oy = round(width * 0.04), round(h * 0.75)
    cv2.putText(p, text, (ox, oy), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    x0, y0 = max(0, ox), max(0, oy - th)
    return p, (x0, y0, min(width, ox + tw) - x0, min(h, oy + base) - y0)


def make_track(frames: list[np.ndarray], patch: np.ndarray, inner: tuple[int, int, int, int], speed: float, y: int,
               visible: range | None = None) -> tuple[list[np.ndarray], list[tuple[int, int, int, int] | None]]:
    """Paste ``patch`` moving ``speed`` px per frame (bouncing between the frame edges), on the
    frames in ``visible`` only (default: all); the truth box is None where it is not pasted."""
    out: list[np.ndarray] = []
    truth: list[tuple[int, int, int, int] | None] = []
    ph, pw = patch.shape[:2]
    span = max(1, frames[0].shape[1] - pw)
    for j, f in enumerate(frames):
        if visible is not None and j not in visible:
            out.append(f)
            truth.append(None)
            continue
        pos = int(round(20 + speed * j)) % (2 * span)
        x = pos if pos < span else 2 * span - pos
        g = f.copy()
        g[y : y + ph, x : x + pw] = patch
        out.append(g)
        truth.append((x + inner[0], y + inner[1], inner[2], inner[3]))
    return out, truth


def blurred_mask(blurred: list[tuple[int, int, int, int]], shape: tuple[int, ...]) -> np.ndarray:
    m = np.zeros(shape[:2], bool)
    for bx, by, bw, bh in blurred:
        m[by : by + bh, bx : bx + bw] = True
    return m


FACE_SIZES = (40, 60, 80, 120)
PLATE_SIZES = (100, 130, 168)


def run(every: list[int], n_frames: int, options: dict[str, Any] | None = None, *,
        face_sizes: tuple[int, ...] = FACE_SIZES, plate_sizes: tuple[int, ...] = PLATE_SIZES) -> dict[str, Any]:
    cv2.setNumThreads(1)
    videos = sorted(VIDEOS.glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no road videos in {VIDEOS}")
    tracks = []
    for vi, v in enumerate(videos):
        base = road_frames(v, n_frames)
        for kind, sizes, maker, y in (("face", face_sizes, face_patch, 30), ("plate", plate_sizes, plate_patch, 230)):
            for size in sizes:
                patch, inner = maker(size)
                for speed in (0.0, 10.0, 30.0):
                    yy = min(y, base[0].shape[0] - patch.shape[0] - 1)
                    frames, truth = make_track(base, patch, inner, speed, yy)
                    tracks.append({"video": v.name, "kind": kind, "size": size, "speed": speed, "frames": frames, "truth": truth})
        # brief appearances: an object in view for only 3, 6 or 10 samples (a face passing close to
        # a side camera), starting at every phase of the detection schedule
        for kind, size, maker, y in (("face", 60, face_patch, 30), ("plate", 130, plate_patch, 230)):
            patch, inner = maker(size)
            yy = min(y, base[0].shape[0] - patch.shape[0] - 1)
            for m in (3, 6, 10):
                for start in range(5, 5 + 8):
                    frames, truth = make_track(base, patch, inner, 10.0, yy, visible=range(start, min(n_frames, start + m)))
                    tracks.append({"video": v.name, "kind": kind, "size": size, "speed": 10.0, "frames": frames, "truth": truth, "brief": m})
    results: dict[str, Any] = {"tracks": len(tracks), "frames_per_track": n_frames, "rows": []}
    for k in every:
        stage = PrivacyStage(**{**(options or {}), "detect_every": k})
        hit: dict[str, list[bool]] = {"face": [], "plate": []}
        brief: dict[str, list[bool]] = {"face": [], "plate": []}
        by: dict[str, list[bool]] = {}
        area = [0, 0]  # blurred pixels, object pixels (frames with an object)
        t = time.thread_time()
        n = 0
        for tr in tracks:
            frames = tr["frames"]
            per = stage.boxes_per_frame(len(frames), lambda j, fs=frames: stage.detect(fs[j]))  # noqa: B023
            n += len(frames)
            for f, truth, boxes in zip(frames, tr["truth"], per):
                if truth is None:
                    continue
                mask = blurred_mask([pad_box(b, stage.padding, f.shape) for b in boxes], f.shape)
                x, y, w, h = truth
                ok = bool(mask[y : y + h, x : x + w].mean() >= 0.9)
                if "brief" in tr:
                    brief[tr["kind"]].append(ok)
                    by.setdefault(f"brief {tr['kind']} {tr['size']}px, {tr['brief']} samples", []).append(ok)
                    continue
                hit[tr["kind"]].append(ok)
                by.setdefault(f"{tr['kind']} {tr['size']}px {tr['speed']:g}px/f", []).append(ok)
                area[0] += int(mask.sum())
                area[1] += w * h
        # the coverage check itself is not privacy work: time the stage's detection alone
        dt = time.thread_time() - t
        t = time.thread_time()
        for tr in tracks:
            for f, truth in zip(tr["frames"], tr["truth"]):
                if truth is not None:
                    blurred_mask([], f.shape)
        dt -= time.thread_time() - t
        results["rows"].append({
            "detect_every": k,
            "face_coverage": float(np.mean(hit["face"])),
            "plate_coverage": float(np.mean(hit["plate"])),
            "brief_face_coverage": float(np.mean(brief["face"])),
            "brief_plate_coverage": float(np.mean(brief["plate"])),
            "blurred_per_object_px": area[0] / max(1, area[1]),
            "ms_per_frame": dt / n * 1e3,
            "fps": n / dt,
            "by_track": {key: float(np.mean(v)) for key, v in by.items()},
        })
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--set", type=Path, default=PRIVACY_SET, help="annotated set: faces/, plates/, pedestrians/ with annotations.jsonl")
    ap.add_argument("--no-tracks", action="store_true", help="only the real annotated set")
    ap.add_argument("--every", default="6", help="detect_every values of the tracks, comma-separated")
    ap.add_argument("--frames", type=int, default=40, help="frames per track (10 Hz)")
    ap.add_argument("--face-sizes", default=",".join(map(str, FACE_SIZES)), help="face widths (px) of the whole-length tracks")
    ap.add_argument("--plate-sizes", default=",".join(map(str, PLATE_SIZES)),
                    help="plate widths (px) of the whole-length tracks (a sweep: 90,100,...,200)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=YAML", help="a PrivacyStage option (e.g. equalize=true)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    console = Console(width=200)
    import yaml

    options = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.option)}
    doc: dict[str, Any] = {}
    if (args.set / "faces" / "annotations.jsonl").is_file():
        doc["real"] = real_set(args.set)
        doc["goals"] = doc["real"]["goals"]
        print_real(doc["real"], console)
    else:
        console.print(f"no annotated set at {args.set}: real-photo recall not measured")
    if args.no_tracks:
        return _write(args.json, doc, console)
    res = run([int(x) for x in args.every.split(",")], args.frames, options,
              face_sizes=tuple(int(x) for x in args.face_sizes.split(",")), plate_sizes=tuple(int(x) for x in args.plate_sizes.split(",")))
    res["options"] = options
    doc["tracks"] = res
    t = Table(title=f"privacy stage: per-frame coverage of pasted faces/plates on real road video ({res['tracks']} tracks x {res['frames_per_track']} frames, 10 Hz, 640 px)")
    for col in ("detect_every", "face coverage", "plate coverage", "brief faces", "brief plates", "blurred px / object px", "ms/frame (CPU, this thread)", "frames/s"):
        t.add_column(col, justify="right")
    for r in res["rows"]:
        t.add_row(str(r["detect_every"]), f"{r['face_coverage']:.2f}", f"{r['plate_coverage']:.2f}", f"{r['brief_face_coverage']:.2f}",
                  f"{r['brief_plate_coverage']:.2f}", f"{r['blurred_per_object_px']:.2f}", f"{r['ms_per_frame']:.1f}", f"{r['fps']:.0f}")
    console.print(t)
    keys = list(res["rows"][0]["by_track"])
    d = Table(title="coverage by track (object size, speed in px per sample)")
    d.add_column("track")
    for r in res["rows"]:
        d.add_column(f"k={r['detect_every']}", justify="right")
    for key in keys:
        d.add_row(key, *[f"{r['by_track'][key]:.2f}" for r in res["rows"]])
    console.print(d)
    return _write(args.json, doc, console)


def _write(path: Path | None, doc: dict[str, Any], console: Console) -> int:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        console.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
