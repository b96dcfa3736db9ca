"""Auto-labelling: telemetry labels on synthetic signals, vision labels on real frames, the ONNX
labeller with a model the test builds, the labels stage, and near-duplicate marking."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fleetcore.labels.dedup import hamming, mark_near_duplicates, phash_hex
from fleetcore.labels import LABELLERS, LabelError, Scored, labels_to_rows, register_labeller
from fleetcore.labels.stage import LabelsStage, build_labellers
from fleetcore.stages.options import LabelsOptions, OnnxLabellerOptions
from fleetcore.labels.telemetry import TelemetryLabeller, clip_sun, dominant_manoeuvre, manoeuvre_sequence
from fleetcore.labels.vision import PedestrianLabeller, VisionLabeller, blocked_stats, grey_scaled, sharpness
from fleetcore.stages.registry import build_stages
from fleetcore.video.extract import ClipFrames
from schemas import LABELS

HZ = 10.0
SF = (37.7749, -122.4194)


def clip_frames(sample_times_ns: np.ndarray, cameras: list[str], frames: dict[str, list[np.ndarray | None]]) -> ClipFrames:
    """The extractor's own ClipFrames, without presentation times (the stages do not read them)."""
    return ClipFrames(sample_times_ns, cameras, frames, pts_ns={}, offset_ns={})


def make_clip(frames: dict[str, list[np.ndarray | None]]) -> ClipFrames:
    n = len(next(iter(frames.values())))
    return clip_frames(np.arange(n, dtype=np.int64) * int(1e9 / HZ), list(frames), frames)


def utc_ns(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    return int(dt.datetime(y, mo, d, h, mi, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000


@pytest.fixture(scope="module")
def udacity_frames(real_data: Path) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(real_data / "video" / "udacity_lanelines_solidWhiteRight.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= 12:
                break
            out.append(cv2.resize(f.to_ndarray(format="rgb24"), (640, 360), interpolation=cv2.INTER_AREA))
    return out


@pytest.fixture(scope="module")
def vehicle_frame(real_data: Path) -> np.ndarray:
    import av

    with av.open(str(real_data / "video" / "udacity_vehicledetection_test_video.mp4")) as c:
        f = next(iter(c.decode(video=0)))
        return cv2.resize(f.to_ndarray(format="rgb24"), (640, 360), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------------------------
# Telemetry
# ---------------------------------------------------------------------------------------------
def _telemetry(speed: np.ndarray, yaw: np.ndarray, accel: np.ndarray) -> dict[str, np.ndarray]:
    n = len(speed)
    return {
        "speed_mps": speed.astype(np.float32),
        "yaw_rate_radps": yaw.astype(np.float32),
        "accel_lon_mps2": accel.astype(np.float32),
        "accel_lat_mps2": (speed * yaw).astype(np.float32),
        "lat_deg": np.full(n, SF[0], np.float32),
        "lon_deg": np.full(n, SF[1], np.float32),
    }


def scenario(kind: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """10 s of telemetry at 10 Hz with one manoeuvre in the middle, and the per-sample truth."""
    n = 100
    t = np.arange(n) / HZ
    speed = np.full(n, 15.0)
    yaw = np.zeros(n)
    accel = np.zeros(n)
    truth = np.array(["straight"] * n, dtype=object)
    rng = np.random.default_rng(1)
    if kind in ("left_turn", "right_turn"):
        speed[:] = 8.0
        sl = slice(30, 70)
        yaw[sl] = 0.3 * np.sin(np.linspace(0, np.pi, 40)) ** 0.3
        truth[30:70] = kind
        if kind == "right_turn":
            yaw = -yaw
        truth[yaw * (1 if kind == "left_turn" else -1) < 0.1] = "straight"
    elif kind.startswith("lane_change"):
        T, a0 = 4.0, 20
        m = int(T * HZ)
        tt = np.arange(m) / HZ
        lat_acc = 3.5 * 2 * np.pi / T**2 * np.sin(2 * np.pi * tt / T)  # y = 3.5 (t/T - sin(2 pi t/T)/2pi)
        sign = 1.0 if kind.endswith("left") else -1.0
        yaw[a0 : a0 + m] = sign * lat_acc / 15.0
        truth[a0 : a0 + m] = kind
    elif kind == "stopping":
        speed[:] = 0.0
        speed[:20] = 10.0
        down = np.maximum(0.0, 10.0 - 2.5 * (t[20:] - t[20]))
        speed[20:] = down
        accel[20:60] = -2.5
        truth[20:60] = "stopping"
        truth[speed < 0.2] = "stopped"
    elif kind == "stopped":
        speed[:] = 0.0
        truth[:] = "stopped"
    elif kind == "accelerating":
        speed = 5.0 + 2.0 * np.clip(t - 2.0, 0, 6.0)
        accel[20:80] = 2.0
        truth[20:80] = "accelerating"
    elif kind == "braking":
        speed = 25.0 - 3.0 * np.clip(t - 2.0, 0, 4.0)
        accel[20:60] = -3.0
        truth[20:60] = "braking"
    elif kind != "straight":
        raise ValueError(kind)
    yaw = yaw + rng.normal(0, 0.002, n)
    accel = accel + rng.normal(0, 0.05, n)
    return _telemetry(speed, yaw, accel), truth.tolist()


@pytest.mark.parametrize(
    "kind",
    ["straight", "left_turn", "right_turn", "lane_change_left", "lane_change_right", "stopping", "stopped", "accelerating", "braking"],
)
def test_manoeuvre_dominant_and_per_sample_accuracy(kind):
    tel, truth = scenario(kind)
    times = np.arange(len(truth), dtype=np.int64) * 100_000_000
    seq = manoeuvre_sequence(tel, times)
    acc = np.mean([a == b for a, b in zip(seq, truth)])
    assert acc >= 0.9, (kind, acc, seq)
    assert dominant_manoeuvre(seq, 0.1) == kind
    vals = TelemetryLabeller().label(make_clip({"front": [None] * len(truth)}), tel, start_utc_ns=utc_ns(2026, 1, 15, 20))
    assert vals["manoeuvre"] == kind
    # the segments cover every sample, in order
    segs = vals["manoeuvre_segments"]
    assert segs[0][1] == 0 and segs[-1][2] == len(truth)
    assert all(a[2] == b[1] for a, b in zip(segs, segs[1:]))


def test_speed_band_and_road_type():
    n = 50
    clip = make_clip({"front": [None] * n})
    lab = TelemetryLabeller()
    for v, band, road in ((0.0, "stopped", "urban"), (10.0, "urban", "urban"), (18.0, "suburban", "rural"), (30.0, "highway", "highway")):
        tel = _telemetry(np.full(n, v), np.zeros(n), np.zeros(n))
        out = lab.label(clip, tel, start_utc_ns=utc_ns(2026, 1, 15, 20))
        assert (out["speed_band"], out["road_type"]) == (band, road), v
    tel = {"speed_mps": np.full(n, np.nan, np.float32)}
    out = lab.label(clip, tel, start_utc_ns=0)
    assert out["speed_band"] == "unknown" and out["manoeuvre"] == "unknown"


def test_time_of_day_san_francisco():
    n = 20
    times = np.arange(n, dtype=np.int64) * 100_000_000
    tel = _telemetry(np.full(n, 10.0), np.zeros(n), np.zeros(n))
    # January: PST = UTC-8. Local noon = 20:00 UTC, local midnight = 08:00 UTC.
    tod, el = clip_sun(tel, times, utc_ns(2026, 1, 15, 20))
    assert tod == "day" and 25 < el < 40
    tod, el = clip_sun(tel, times, utc_ns(2026, 1, 16, 8))
    assert tod == "night" and el < -50
    # local 17:20 PST, just after sunset (about 17:15): twilight
    tod, el = clip_sun(tel, times, utc_ns(2026, 1, 16, 1, 20))
    assert tod == "dusk_dawn" and -6 < el < 6
    no_gps = {k: v for k, v in tel.items() if k not in ("lat_deg", "lon_deg")}
    assert clip_sun(no_gps, times, utc_ns(2026, 1, 15, 20)) == ("unknown", None)


# ---------------------------------------------------------------------------------------------
# Vision
# ---------------------------------------------------------------------------------------------
def night_scene(seed: int = 0) -> np.ndarray:
    """A dark road at night: near-black, a few street lights, headlight-lit lane markings."""
    rng = np.random.default_rng(seed)
    f = rng.integers(0, 8, (360, 640, 3), dtype=np.uint8)
    for x in (80, 250, 420, 590):
        cv2.circle(f, (x, 60), 6, (255, 240, 200), -1)
        cv2.circle(f, (x, 60), 14, (90, 80, 60), 2)
    for k in range(5):
        y = 230 + k * 25
        cv2.line(f, (300 - k * 18, y), (304 - k * 20, y + 15), (200, 200, 190), 3)
        cv2.line(f, (340 + k * 18, y), (344 + k * 20, y + 15), (200, 200, 190), 3)
    cv2.ellipse(f, (320, 330), (200, 40), 0, 0, 360, (40, 38, 30), -1)
    return f


def test_vision_labels_on_made_frames(udacity_frames):
    bright = udacity_frames[0]
    black = np.random.default_rng(0).integers(0, 3, bright.shape, dtype=np.uint8)
    blurred = cv2.GaussianBlur(bright, (0, 0), 6)
    smear = bright.copy()
    cv2.ellipse(smear, (320, 180), (330, 190), 0, 0, 360, (110, 95, 70), -1)  # mud over ~85 % of the lens
    night = night_scene()
    clip = make_clip({c: [f] * 6 for c, f in (("front", bright), ("black", black), ("blur", blurred), ("smear", smear), ("night", night))})
    v = VisionLabeller().label(clip, {}, start_utc_ns=0)
    assert v["front.exposure"] == "ok" and v["front.brightness"] > 90
    assert v["front.blocked"] is False and v["front.blurry"] is False
    assert v["black.blocked"] is True and v["black.exposure"] == "under" and v["black.brightness"] < 5
    assert v["smear.blocked"] is True and v["smear.blocked_fraction"] >= 0.7
    assert v["blur.blurry"] is True and v["blur.sharpness"] < v["front.sharpness"] / 10
    assert v["blur.blocked"] is False
    assert v["night.blocked"] is False, v["night.blocked_fraction"]  # dark but lit: a night scene
    assert v["night.exposure"] == "under"
    assert v["front.motion_energy"] == pytest.approx(0.0, abs=1e-3)  # the same frame repeated
    assert all(v[f"{c}.scene_cut"] is False for c in clip.cameras)
    assert v["scene_light"] == "bright" and v["light_conflict"] == "unknown"  # no GPS


def test_vision_on_real_video_frames(udacity_frames, vehicle_frame):
    frames = list(udacity_frames)
    v = VisionLabeller().label(make_clip({"front": frames}), {}, start_utc_ns=0)
    assert v["front.exposure"] == "ok" and v["scene_light"] == "bright"
    assert v["front.blocked"] is False and v["front.blurry"] is False
    assert v["front.motion_energy"] > 0.05  # the car moves
    assert v["front.scene_cut"] is False
    # a cut to another video inside the clip
    cut = frames[:6] + [vehicle_frame] * 6
    v = VisionLabeller().label(make_clip({"front": cut}), {}, start_utc_ns=0)
    assert v["front.scene_cut"] is True and v["front.scene_cut_sample"] == 6


def test_light_conflict(udacity_frames):
    n = 6
    tel = _telemetry(np.full(n, 10.0), np.zeros(n), np.zeros(n))
    bright = make_clip({"front": [udacity_frames[0]] * n})
    dark = make_clip({"front": [night_scene()] * n})
    night, noon = utc_ns(2026, 1, 16, 8), utc_ns(2026, 1, 15, 20)
    lab = VisionLabeller()
    assert lab.label(bright, tel, start_utc_ns=night)["light_conflict"] == "night_but_bright"
    assert lab.label(dark, tel, start_utc_ns=noon)["light_conflict"] == "day_but_dark"
    assert lab.label(bright, tel, start_utc_ns=noon)["light_conflict"] == "none"
    out = lab.label(dark, tel, start_utc_ns=night)
    assert (out["light_conflict"], out["time_of_day"], out["scene_light"]) == ("none", "night", "dark")


def test_sharpness_and_blocked_helpers_on_real_frame(udacity_frames):
    g = grey_scaled(udacity_frames[0])
    assert max(g.shape) == 480
    assert sharpness(g) > 60
    assert blocked_stats(udacity_frames[0])[0] is False


def draw_person(img: np.ndarray, cx: int, top: int, h: int, colour=(30, 30, 40)) -> None:
    """A pedestrian silhouette (head, torso, arms, legs) about ``h`` px tall."""
    cv2.circle(img, (cx, int(top + 0.08 * h)), int(0.07 * h), colour, -1)
    cv2.ellipse(img, (cx, int(top + 0.33 * h)), (int(0.12 * h), int(0.2 * h)), 0, 0, 360, colour, -1)
    for side in (-1, 1):
        cv2.line(img, (cx + side * int(0.05 * h), int(top + 0.5 * h)), (cx + side * int(0.09 * h), int(top + 0.98 * h)), colour, int(0.07 * h))
        cv2.line(img, (cx + side * int(0.11 * h), int(top + 0.2 * h)), (cx + side * int(0.16 * h), int(top + 0.55 * h)), colour, int(0.045 * h))


def test_pedestrians(udacity_frames):
    rng = np.random.default_rng(0)
    street = np.clip(170 + rng.integers(-10, 10, (360, 640, 3)), 0, 255).astype(np.uint8)
    empty = cv2.GaussianBlur(street, (0, 0), 1.5)
    people = street.copy()
    draw_person(people, 200, 60, 200)
    draw_person(people, 450, 80, 200)
    people = cv2.GaussianBlur(people, (0, 0), 1.5)
    lab = PedestrianLabeller()
    out = lab.label(make_clip({"front": [people] * 3, "rear": [empty] * 3}), {}, start_utc_ns=0)
    assert out["camera"] == "front" and out["pedestrians"] is True and out["pedestrian_count"] == 2
    centres = sorted(b[1] + b[3] / 2 for b in out["pedestrian_boxes"])
    assert abs(centres[0] - 200) < 40 and abs(centres[1] - 450) < 40
    json.dumps(out["pedestrian_boxes"])
    out = lab.label(make_clip({"front": [empty] * 3}), {}, start_utc_ns=0)
    assert out == {"pedestrians": False, "pedestrian_count": 0, "pedestrian_boxes": [], "camera": "front"}
    # a small real frame is upscaled before detection (and the empty road has nobody on it)
    small = cv2.resize(udacity_frames[0], (320, 180), interpolation=cv2.INTER_AREA)
    assert lab.label(make_clip({"front": [small]}), {}, start_utc_ns=0)["pedestrian_count"] == 0


# ---------------------------------------------------------------------------------------------
# ONNX labeller
# ---------------------------------------------------------------------------------------------
def make_colour_model(path: Path, gain: float = 10.0) -> Path:
    """(N,3,H,W) -> GlobalAveragePool -> Flatten -> MatMul(gain * I) -> Softmax: the mean colour's class."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array((np.eye(3) * gain).astype(np.float32), name="W")
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_labeller_from_config(tmp_path, udacity_frames):
    make_colour_model(tmp_path / "colour.onnx")
    cfg = tmp_path / "labels.yaml"
    cfg.write_text(
        "builtins: [telemetry]\n"
        "labellers:\n"
        "  - {kind: onnx, name: colour, version: '2', path: colour.onnx, input_size: [32, 32],\n"
        "     labels: [red, green, blue], batch_size: 2, frames: 5}\n"
    )
    opts = LabelsOptions.from_file(cfg)
    assert opts == LabelsOptions(builtins=("telemetry",), labellers=(OnnxLabellerOptions(
        name="colour", path=str(tmp_path / "colour.onnx"), input_size=(32, 32), labels=("red", "green", "blue"), version="2", batch_size=2,
        frames=5),))
    labs = build_labellers(opts)
    assert [lab.name for lab in labs] == ["telemetry", "colour"]
    colour = labs[1]
    red = np.zeros((120, 160, 3), np.uint8)
    red[..., 0] = 230
    blue = np.zeros((120, 160, 3), np.uint8)
    blue[..., 2] = 200
    out = colour.label(make_clip({"front": [red] * 5}), {}, start_utc_ns=0)
    assert isinstance(out["class"], Scored) and out["class"].value == "red" and out["class"].score > 0.8
    assert out["frames"] == 1  # five samples of one shared frame object
    out = colour.label(make_clip({"front": [blue, None, blue.copy()]}), {}, start_utc_ns=0)
    assert out["class"].value == "blue" and out["frames"] == 2
    # on real frames the probabilities equal softmax(10 * mean RGB / 255) of the resized frames
    frames = udacity_frames[:7]
    out = colour.label(make_clip({"front": frames}), {}, start_utc_ns=0)
    assert out["frames"] == 5  # evenly picked, 3 batches of 2
    from fleetcore.labels.base import pick_evenly

    picked = [f for _, f in pick_evenly(list(enumerate(frames)), 5)]
    means = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA).reshape(-1, 3).mean(0) / 255 for f in picked])
    e = np.exp(10 * means)
    expect = (e / e.sum(1, keepdims=True)).mean(0)
    got = np.array([out["probs"][k] for k in ("red", "green", "blue")])
    np.testing.assert_allclose(got, expect, atol=1e-4)
    rows = labels_to_rows("clip-1", colour, out)
    LABELS.validate(LABELS.from_pylist(rows))
    cls = next(r for r in rows if r["label"] == "class")
    assert cls["labeller_version"] == "2" and cls["value"] in ("red", "green", "blue") and 0 < cls["score"] <= 1


def test_onnx_model_bytes_are_in_the_version_and_checked_on_load(tmp_path):
    """The options hold the model file's sha256 (so the run config's version covers the model's
    bytes); a worker whose file differs refuses it instead of labelling with another model."""
    from fleetcore.clips import CurateConfig
    from fleetcore.errors import ConfigError

    model = tmp_path / "colour.onnx"
    make_colour_model(model)
    spec = dict(name="colour", path=str(model), input_size=(32, 32), labels=("red", "green", "blue"))
    first = OnnxLabellerOptions(**spec)
    assert first.model_sha256 and len(first.model_sha256) == 64
    v1 = CurateConfig(labels=LabelsOptions(builtins=("telemetry",), labellers=(first,))).version()
    make_colour_model(model, gain=5.0)  # another model under the same path
    with pytest.raises(ConfigError, match="changed since the run was configured"):
        build_labellers(LabelsOptions(builtins=("telemetry",), labellers=(first,)))
    second = OnnxLabellerOptions(**spec)
    assert second.model_sha256 != first.model_sha256
    assert CurateConfig(labels=LabelsOptions(builtins=("telemetry",), labellers=(second,))).version() != v1


def test_onnx_config_errors(tmp_path):
    from fleetcore.errors import ConfigError

    cfg = tmp_path / "labels.json"
    cfg.write_text(json.dumps({"labellers": [{"kind": "onnx", "name": "m", "path": "missing.onnx", "input_size": 32, "labels": ["a"]}]}))
    with pytest.raises(ConfigError, match="not found"):
        build_labellers(LabelsOptions.from_file(cfg))
    cfg.write_text(json.dumps({"builtins": ["nope"]}))
    with pytest.raises(ConfigError, match="^<labels options>: builtins: unknown labeller 'nope'"):
        build_labellers(LabelsOptions.from_file(cfg))
    for doc, where in (({"labellers": [{"kind": "onnx", "name": "m", "path": "m.onnx", "input_size": 32}]}, "labellers[0].labels: required"),
                       ({"labellers": [{"kind": "onnx", "name": "m", "path": "m.onnx", "input_size": 32, "labels": ["a"], "frames": 0}]},
                        "labellers[0].frames: expected an integer >= 1"),
                       ({"labellers": [{"kind": "tf"}]}, "labellers[0].kind: "),
                       ({"builtins": "telemetry"}, "builtins: expected a list"),
                       ({"models": []}, "models: unknown key")):
        cfg.write_text(json.dumps(doc))
        with pytest.raises(ConfigError, match="^" + re.escape(f"{cfg}: {where}")):
            LabelsOptions.from_file(cfg)


# ---------------------------------------------------------------------------------------------
# Stage, rows, registry
# ---------------------------------------------------------------------------------------------
def test_labels_stage_registered_and_rows_valid(udacity_frames):
    (stage,) = build_stages(["labels"])
    assert isinstance(stage, LabelsStage)
    assert {"telemetry", "vision", "pedestrians", "phash"} <= {lab.name for lab in stage.labellers}
    n = len(udacity_frames)
    tel = _telemetry(np.full(n, 12.0), np.zeros(n), np.zeros(n))
    record = {"clip_id": "veh-1_123_abc", "start_utc_ns": utc_ns(2026, 1, 15, 20)}
    rows = stage(clip=make_clip({"front": udacity_frames}), telemetry=tel, drive=None, record=record)
    table = LABELS.validate(LABELS.from_pylist(rows))
    assert table.num_rows == len(rows) > 20
    assert set(table.column("clip_id").to_pylist()) == {"veh-1_123_abc"}
    by = {(r["labeller"], r["label"]): r for r in rows}
    assert by[("telemetry", "time_of_day")]["value"] == "day"
    assert by[("telemetry", "speed_mean_mps")]["score"] == pytest.approx(12.0)
    assert by[("vision", "front.blocked")]["value"] == "false"
    assert len(json.loads(by[("phash", "phash")]["value"])) == 3
    # the record is JSON-able and names every labeller with its version
    blob = json.dumps(record["labels"], allow_nan=False, sort_keys=True)
    assert json.loads(blob)["telemetry"]["version"] == "1"
    assert set(record["labels"]) == {lab.name for lab in stage.labellers}


def test_labellers_side_by_side_give_the_labels_of_one_after_the_other(udacity_frames):
    labellers = build_labellers()
    n = len(udacity_frames)
    tel = _telemetry(np.full(n, 12.0), np.zeros(n), np.zeros(n))
    out = []
    for threads in (1, 2, 4):
        stage = LabelsStage(labellers, threads=threads)
        assert stage.threads == min(threads, len(labellers))
        record = {"clip_id": "c", "start_utc_ns": utc_ns(2026, 1, 15, 20)}
        rows = stage(clip=make_clip({"front": udacity_frames}), telemetry=tel, drive=None, record=record)
        out.append((rows, json.dumps(record, sort_keys=True)))
    assert out[0] == out[1] == out[2]
    assert [r["labeller"] for r in out[0][0]] == sorted((r["labeller"] for r in out[0][0]), key=[lab.name for lab in labellers].index)


def test_labellers_side_by_side_raise_the_first_failure_in_labeller_order():
    class Fails:
        version = "0"

        def __init__(self, name, delay):
            self.name, self.delay, self.done = name, delay, False

        def label(self, clip, telemetry, *, start_utc_ns):
            time.sleep(self.delay)  # the later labeller fails first in time
            self.done = True
            raise ValueError(f"{self.name} broke")

    first, second = Fails("first", 0.3), Fails("second", 0.0)
    stage = LabelsStage([first, second], threads=2)
    with pytest.raises(LabelError, match="first.*first broke"):
        stage(clip=make_clip({"front": [None]}), telemetry={}, drive=None, record={"clip_id": "c", "start_utc_ns": 0})
    assert first.done and second.done  # every labeller finished before the stage raised


def test_labels_to_rows_types():
    class L:
        name, version = "x", "3"

    rows = labels_to_rows("c", L(), {"b": True, "f": 1.5, "i": 2, "s": "day", "n": float("nan"), "u": None, "j": [[1, 2]], "k": Scored("a", 0.7)})
    by = {r["label"]: (r["value"], r["score"]) for r in rows}
    assert by == {"b": ("true", 1.0), "f": (None, 1.5), "i": (None, 2.0), "s": ("day", None), "n": (None, None), "u": (None, None), "j": ("[[1,2]]", None), "k": ("a", 0.7)}
    assert [r["label"] for r in rows] == sorted(by)
    LABELS.validate(LABELS.from_pylist(rows))


def test_register_labeller_and_failure_is_typed():
    @register_labeller
    class Broken:
        name = "test_broken"
        version = "0"

        def label(self, clip, telemetry, *, start_utc_ns):
            raise ZeroDivisionError("boom")

    try:
        assert LABELLERS["test_broken"] is Broken
        stage = LabelsStage([Broken()])
        with pytest.raises(LabelError, match="test_broken.*boom"):
            stage(clip=make_clip({"front": [None]}), telemetry={}, drive=None, record={"clip_id": "c", "start_utc_ns": 0})
    finally:
        LABELLERS.pop("test_broken")


# ---------------------------------------------------------------------------------------------
# Near-duplicates
# ---------------------------------------------------------------------------------------------
def test_near_duplicates(udacity_frames, vehicle_frame):
    rng = np.random.default_rng(0)

    def noisy(f):
        return np.clip(f.astype(np.int16) + rng.integers(-4, 5, f.shape), 0, 255).astype(np.uint8)

    parked = udacity_frames[0]
    a = [phash_hex(noisy(parked)) for _ in range(3)]
    b = [phash_hex(noisy(parked)) for _ in range(3)]
    c = [phash_hex(vehicle_frame)] * 3
    assert len(a[0]) == 16 and max(hamming(x, y) for x, y in zip(a, b)) <= 4
    assert hamming(a[0], c[0]) > 16
    rows = [
        ("clip-a", "veh-1", 0, a),
        ("clip-b", "veh-1", 60_000_000_000, b),  # same vehicle, same view: duplicate
        ("clip-c", "veh-1", 120_000_000_000, c),  # different scene
        ("clip-d", "veh-2", 30_000_000_000, b),  # another vehicle: not a duplicate
        ("clip-e", "veh-1", 180_000_000_000, a),  # points at the original, not at clip-b
        ("clip-f", "veh-1", 190_000_000_000, []),  # no hashes
    ]
    assert mark_near_duplicates(rows) == {"clip-a": None, "clip-b": "clip-a", "clip-c": None, "clip-d": None, "clip-e": "clip-a", "clip-f": None}
    assert mark_near_duplicates(rows, max_gap_ns=100_000_000_000)["clip-e"] is None


def test_phash_labeller_on_repeated_and_different_frames(udacity_frames, vehicle_frame):
    lab = LABELLERS["phash"]()
    same = lab.label(make_clip({"front": [udacity_frames[0]] * 5}), {}, start_utc_ns=0)["phash"]
    assert len(same) == 3
    diff = lab.label(make_clip({"front": [udacity_frames[0], udacity_frames[0], vehicle_frame]}), {}, start_utc_ns=0)["phash"]
    assert len(set(same)) == 1
    assert mark_near_duplicates([("a", "v", 0, same), ("b", "v", 1, same), ("c", "v", 2, diff)]) == {"a": None, "b": "a", "c": None}


def test_stop_and_go_clip_is_stopping_even_with_longer_pull_away():
    n = 150
    t = np.arange(n) / HZ
    speed = np.concatenate([10.0 - 2.5 * t[:40], np.zeros(25), 2.0 * t[: n - 65]])
    speed = np.clip(speed, 0, None)
    accel = np.concatenate([np.full(40, -2.5), np.zeros(25), np.full(n - 65, 2.0)])
    tel = _telemetry(speed, np.zeros(n), accel)
    seq = manoeuvre_sequence(tel, np.arange(n, dtype=np.int64) * 100_000_000)
    assert seq.count("accelerating") > seq.count("stopping") > 30
    assert dominant_manoeuvre(seq, 0.1) == "stopping"


def test_duplicates_from_catalog_tables(udacity_frames, vehicle_frame):
    import pyarrow as pa

    from fleetcore.labels.dedup import duplicates_from_catalog

    (stage,) = build_stages(["labels"])
    rows = []
    for cid, frames in (("c1", [udacity_frames[0]] * 4), ("c2", [udacity_frames[0].copy()] * 4), ("c3", [vehicle_frame] * 4)):
        rows += stage(clip=make_clip({"front": frames}), telemetry={}, drive=None, record={"clip_id": cid, "start_utc_ns": 0})
    labels = LABELS.validate(LABELS.from_pylist(rows))
    clips = pa.table({"clip_id": ["c1", "c2", "c3"], "vehicle_id": ["v"] * 3, "start_ns": [0, 10, 20]})
    assert duplicates_from_catalog(clips, labels) == {"c1": None, "c2": "c1", "c3": None}


def test_time_of_day_from_frames_without_gps(udacity_frames, vehicle_frame):
    """No GPS fix: the forward camera's frames decide, and the labels say so. Real daylight drives
    read day; the same real frames as a night camera sees them (exposure cut to a sixth, the sky
    black, street lights and headlights as small bright spots) read night."""
    lab = VisionLabeller()
    for frames in (list(udacity_frames), [vehicle_frame] * 6):
        v = lab.label(make_clip({"front": frames}), {}, start_utc_ns=0)
        assert (v["time_of_day"], v["time_of_day_source"]) == ("day", "frames")

    def as_night(f: np.ndarray) -> np.ndarray:
        g = (f.astype(np.float32) / 255.0) ** 2.2 * 255.0 / 6.0  # a short exposure of the same scene
        g[: int(f.shape[0] * 0.45)] *= 0.25  # an unlit sky
        n = g.clip(0, 255).astype(np.uint8)
        for x, y in ((80, 120), (300, 100), (520, 130), (250, 260), (390, 260)):
            cv2.circle(n, (x, y), 6, (255, 240, 200), -1)  # street lights, headlights
        return n

    v = lab.label(make_clip({"front": [as_night(f) for f in udacity_frames]}), {}, start_utc_ns=0)
    assert (v["time_of_day"], v["time_of_day_source"]) == ("night", "frames")
    v = lab.label(make_clip({"front": [night_scene()] * 6}), {}, start_utc_ns=0)
    assert v["time_of_day"] == "night"

    def city_night(f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The same real road as a dashcam with auto gain sees it in a city at night: a grey,
        noisy sky glow, lamps and headlights, the dashcam's white date overlay at the top."""
        g = (f.astype(np.float32) / 255.0) ** 1.6 * 255.0 / 2.5
        top = int(f.shape[0] * 0.45)
        g[:top] = g[:top] * 0.3 + 45 + rng.normal(0, 8, g[:top].shape)
        n = g.clip(0, 255).astype(np.uint8)
        for x, y in ((60, 90), (160, 110), (300, 100), (460, 95), (600, 120), (250, 250), (390, 250), (200, 170), (420, 170)):
            cv2.circle(n, (x, y), 5, (255, 245, 220), -1)
            cv2.circle(n, (x, y), 12, (140, 120, 90), 3)
        cv2.putText(n, "2019/03/02 22:14:05  057 km/h", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
        return n

    rng = np.random.default_rng(0)
    v = lab.label(make_clip({"front": [city_night(f, rng) for f in udacity_frames]}), {}, start_utc_ns=0)
    assert (v["time_of_day"], v["time_of_day_source"]) == ("night", "frames")
    # the same road at dusk (all of it darker, the sky still the brightest part, no lamps yet)
    v = lab.label(make_clip({"front": [(f * 0.45).astype(np.uint8) for f in udacity_frames]}), {}, start_utc_ns=0)
    assert v["time_of_day"] == "dusk_dawn"
    # with a GPS fix the sun decides, whatever the frames look like
    n = 6
    tel = _telemetry(np.full(n, 10.0), np.zeros(n), np.zeros(n))
    v = lab.label(make_clip({"front": [udacity_frames[0]] * n}), tel, start_utc_ns=utc_ns(2026, 1, 16, 8))
    assert (v["time_of_day"], v["time_of_day_source"]) == ("night", "gps")
    # the catalog column takes the frames' reading when telemetry has no fix
    from fleetcore.clips.pack import label_columns

    rows = [{"labeller": "telemetry", "label": "time_of_day", "value": "unknown", "score": None, "labeller_version": "1"},
            {"labeller": "vision", "label": "time_of_day", "value": "night", "score": None, "labeller_version": "4"}]
    assert label_columns(rows, privacy=True)["time_of_day"] == "night"


def test_manoeuvres_prefer_steering_over_a_noisy_gps_course():
    """A real drive's GPS course is noise at low speed and jumpy at speed: braking to a stop and a
    straight pull-away must not read as turns when a steering angle is logged (it decides), and a
    turn seen only in the steering angle is a turn."""
    n = 100  # 10 s at 10 Hz
    t = (np.arange(n) * 1e8).astype(np.int64)
    rng = np.random.default_rng(3)
    speed = np.r_[np.linspace(12, 0, 50), np.linspace(0, 8, 50)]  # braking to a stop, then pulling away
    noisy_course = (1.0 + rng.normal(0, 0.02, n)) % (2 * np.pi)  # a GPS course: the true one plus ~1 deg of white noise
    tel = {"speed_mps": speed, "heading_rad": noisy_course, "steering_angle_rad": np.zeros(n),
           "accel_lon_mps2": np.gradient(speed, 0.1)}
    seq = manoeuvre_sequence(tel, t)
    assert not {"left_turn", "right_turn"} & set(seq), seq
    # the steering angle alone shows a left turn at 8 m/s (90 deg of wheel: yaw ~0.15 rad/s)
    tel = {"speed_mps": np.full(n, 8.0), "steering_angle_rad": np.r_[np.zeros(30), np.full(40, np.pi / 2), np.zeros(30)],
           "accel_lon_mps2": np.zeros(n)}
    seq = manoeuvre_sequence(tel, t)
    assert seq[50] == "left_turn" and seq[5] == "straight" and seq[-5] == "straight"
    # course only: smoothed before it is differentiated, so its noise makes no turns either
    tel = {"speed_mps": np.full(n, 12.0), "heading_rad": noisy_course, "accel_lon_mps2": np.zeros(n)}
    assert not {"left_turn", "right_turn"} & set(manoeuvre_sequence(tel, t))
