"""fleet triggers backtest: the shipped triggers over a real store's telemetry reproduce the curate job's events."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from fleetcore.query.backtest import backtest, bytes_per_clip_second, window_sheet, window_thumbnails
from fleetcore.store.catalog import Catalog
from fleetcore.query.mining import Filters
from fleetcore.triggers.library import TRIGGERS_DIR, load_triggers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(plain_store):
    return plain_store


_KEY = ["vehicle_id", "drive_id", "trigger", "window_start_ns", "window_end_ns", "event_start_ns", "event_end_ns"]


@pytest.mark.parametrize("trigger_file", sorted(p.name for p in TRIGGERS_DIR.glob("*.yaml")))
def test_backtest_reproduces_store_events(fleet, trigger_file):
    _, store = fleet
    specs = load_triggers([TRIGGERS_DIR / trigger_file])
    names = {s.name for s in specs}
    res = backtest(store, specs)
    stored = Catalog(str(store)).read("triggers").filter(pl.col("trigger").is_in(sorted(names)))
    got = res.events.select(stored.columns).sort(_KEY)
    want = stored.with_columns(pl.col("date").cast(pl.String)).sort(_KEY)
    assert got.equals(want), trigger_file
    assert res.events.height == stored.height


def test_backtest_report(fleet):
    _, store = fleet
    res = backtest(store, load_triggers())
    s = res.summary()
    assert s["drives"] == 4 and s["firings"] == Catalog(str(store)).read("triggers").height
    assert sum(r["firings"] for r in s["per_day"]) == s["firings"] == sum(r["firings"] for r in s["per_vehicle"])
    assert {r["date"] for r in s["per_day"]} == set(Catalog(str(store)).read("drives")["date"])
    # the windows are the curate job's clips (before clamping to camera coverage)
    clips = Catalog(str(store)).read("clips")
    assert s["clips"] == clips.height
    assert abs(s["clip_hours"] * 3600 - clips["duration_s"].sum()) < 0.5
    bpcs = bytes_per_clip_second(store)
    current = Catalog(str(store)).store_manifest()["current"]["bytes"]
    assert current == sum(Path(p).stat().st_size for p in Path(store, "clips").rglob("*.tar"))  # one generation per drive
    assert bpcs == pytest.approx(current / clips["duration_s"].sum())
    assert s["estimated_bytes"] == pytest.approx(current, rel=0.02)
    assert 1 <= len(s["examples"]) <= 5
    # date filter
    d0 = sorted(clips["date"].unique())[0]
    only = backtest(store, load_triggers(), filters=Filters(until=d0))
    assert set(only.events["date"]) == {d0} and only.drives == 2


def test_backtest_new_trigger_and_thumbnails(fleet, tmp_path):
    landing, store = fleet
    spec = tmp_path / "slow.yaml"
    spec.write_text("name: slow_roll\nversion: 1\nwhere: \"speed_mps < 8\"\nmin_duration_s: 1.0\npre_roll_s: 1.0\npost_roll_s: 1.0\n")
    res = backtest(store, load_triggers([spec]))
    assert res.events.height >= 1 and set(res.events["trigger"]) == {"slow_roll"}
    # a window inside a stored clip comes from the store; one before any clip comes from the landing drive
    drives = Catalog(str(store)).read("drives").sort("drive_id")
    d = drives.row(0, named=True)
    first_clip = Catalog(str(store)).read("clips").filter(pl.col("drive_id") == d["drive_id"])["start_ns"].min()
    outside = {"vehicle_id": d["vehicle_id"], "drive_id": d["drive_id"], "date": d["date"], "start_ns": d["start_ns"] + 100_000_000,
               "end_ns": min(d["start_ns"] + 2_000_000_000, first_clip - 1), "triggers": ["x"], "primary_trigger": "x"}
    assert outside["end_ns"] > outside["start_ns"]
    c = Catalog(str(store)).read("clips").sort("clip_id").row(0, named=True)
    inside = {"vehicle_id": c["vehicle_id"], "drive_id": c["drive_id"], "date": c["date"], "start_ns": c["start_ns"] + 500_000_000,
              "end_ns": c["end_ns"] - 500_000_000, "triggers": c["triggers"], "primary_trigger": c["primary_trigger"]}
    rows = window_thumbnails(store, [inside, outside], n=4)
    # this store was curated without the privacy stage: both sources go through it for the preview
    assert [r[3] for r in rows] == ["store+privacy", "landing+privacy"]
    for _, cam, frames, _ in rows:
        assert cam == "front" and 1 <= len(frames) <= 4 and all(f.std() > 5 for f in frames)
    out = window_sheet(store, [inside, outside], tmp_path / "bt.png", n=4)
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] >= 4 * 160 and img.std() > 10


def test_cli_backtest(fleet, tmp_path):
    _, store = fleet
    from fleet_cli.mine import triggers

    png = tmp_path / "windows.png"
    res = CliRunner().invoke(triggers, ["backtest", str(TRIGGERS_DIR / "hard_brake.yaml"), "--store", str(store), "--json", "--preview", str(png)])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output[res.output.index("{"):])
    assert s["firings_by_trigger"] == {"hard_brake": 1} and s["clips"] == 1
    img = cv2.imread(str(png))
    assert img is not None and img.std() > 10
    res = CliRunner().invoke(triggers, ["backtest", str(TRIGGERS_DIR / "hard_brake.yaml"), "--store", str(store)])
    assert res.exit_code == 0 and "per vehicle" in res.output


def test_preview_of_landing_video_is_blurred(tmp_path, real_data):
    """A window no stored clip covers is decoded from the landing drive for the preview: a real face
    in that video is blurred there, as the curate job would blur it (no unblurred pixels leave)."""
    import av
    from skimage import data as skdata

    from conftest import build_drive
    from fleetcore.clips import CurateConfig
    from fleetcore.video.ffmpeg import encode_frames
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    with av.open(str(real_data / "video" / "udacity_lanelines_solidWhiteRight.mp4")) as c:
        road = cv2.resize(next(iter(c.decode(video=0))).to_ndarray(format="rgb24"), (320, 180), interpolation=cv2.INTER_AREA)
    face = cv2.resize(skdata.astronaut()[20:220, 130:320], (95, 100), interpolation=cv2.INTER_AREA)
    frames = []
    for _ in range(30):
        f = road.copy()
        f[20:120, 40:135] = face
        frames.append(f)
    clip = encode_frames(frames, tmp_path / "face.mp4", fps=10, crf=18)
    landing, store = tmp_path / "landing", tmp_path / "store"
    build_drive(clip, landing, cameras=("front",))
    run_curate(str(landing), str(store), CurateConfig(stages=()), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    d = Catalog(str(store)).read("drives").row(0, named=True)
    # a window that ends after every stored clip of the drive: no clip holds it, it is decoded from landing
    last = Catalog(str(store)).read("clips")["end_ns"].max() or d["start_ns"]
    window = {"vehicle_id": d["vehicle_id"], "drive_id": d["drive_id"], "date": d["date"], "start_ns": d["start_ns"] + 200_000_000,
              "end_ns": max(last + 40_000_000, d["start_ns"] + 1_000_000_000), "triggers": ["x"], "primary_trigger": "x"}
    assert window["end_ns"] <= d["end_ns"]

    def detail(img: np.ndarray) -> float:  # the face's detail (the crop at the thumbnail's scale)
        s = img.shape[1] / 320
        g = cv2.cvtColor(img[int(45 * s):int(100 * s), int(62 * s):int(115 * s)], cv2.COLOR_RGB2GRAY)
        return float(cv2.Laplacian(g, cv2.CV_64F).var())

    ((_, _, shown, src),) = window_thumbnails(store, [window], n=3)
    assert src == "landing+privacy" and len(shown) == 3
    raw = detail(cv2.resize(frames[5], (shown[0].shape[1], shown[0].shape[0]), interpolation=cv2.INTER_AREA))
    assert all(detail(f) < raw / 5 for f in shown), (raw, [detail(f) for f in shown])
