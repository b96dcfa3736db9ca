"""Telemetry-only drives (a manifest with no cameras) are first-class: their trigger windows become
video-less clips (catalog ``cameras`` [], samples of the JSON and telemetry members), labelled by the
telemetry labeller, counted by coverage, priced by backtests and previewed as a placeholder; the run
summary says why a drive has no clip. The store also mixes a drive with GPS and one without, the
shape that gave ``clip_labels`` two dtypes for ``sun_elevation_deg``."""

from __future__ import annotations

import json

import cv2
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner

from conftest import SIM_CURATE, telemetry_table
from fleetcore.store.catalog import Catalog

pytestmark = pytest.mark.slow

T0 = 5_000_000_000


def braking_telemetry(seconds: float = 20.0, hz: float = 50.0) -> pa.Table:
    """15 m/s, then a hard brake (-6 m/s^2 for 1.5 s) at 10 s; a GPS fix throughout."""
    n = int(seconds * hz)
    t = T0 + (np.arange(n) * (1e9 / hz)).astype(np.int64)
    s = (t - T0) / 1e9
    accel = np.where((s >= 10.0) & (s < 11.5), -6.0, 0.0)
    speed = np.clip(15.0 + np.cumsum(accel) / hz, 0.0, None)
    return pa.table({"t_ns": pa.array(t, pa.int64()), "speed_mps": speed, "accel_lon_mps2": accel, "steering_angle_rad": np.zeros(n),
                     "lat_deg": np.full(n, 37.77), "lon_deg": np.full(n, -122.42)})


@pytest.fixture(scope="module")
def store(clip_3s, tmp_path_factory):
    from conftest import build_drive
    from fleetcore.clips import CurateConfig
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    tmp = tmp_path_factory.mktemp("telonly")
    landing, out = tmp / "landing", tmp / "store"
    build_drive(clip_3s, landing, "veh-t", "brake", cameras=(), telemetry=braking_telemetry())
    blip = telemetry_table(T0, 0.04)  # two rows 20 ms apart: a window shorter than a sample period
    build_drive(clip_3s, landing, "veh-t", "blip", cameras=(), telemetry=blip)
    no_gps = telemetry_table(T0, 3.0).drop_columns(["lat_deg", "lon_deg"])
    build_drive(clip_3s, landing, "veh-v", "video", cameras=("front",), telemetry=no_gps)
    summary = run_curate(str(landing), str(out), CurateConfig(**SIM_CURATE), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    return out, summary


def _tel_clips(store) -> pl.DataFrame:
    return Catalog(str(store)).read("clips").filter(pl.col("drive_id") == "brake").sort("start_ns")


def test_telemetry_only_drive_gets_video_less_clips(store):
    out, summary = store
    assert summary["quarantined"] == []
    clips = _tel_clips(out)
    assert clips.height >= 1, summary
    assert any("hard_brake" in t for t in clips["triggers"].to_list())
    for r in clips.iter_rows(named=True):
        assert r["cameras"] == [] and r["missing_frames"] == 0
        assert r["n_samples"] == pytest.approx(r["duration_s"] * SIM_CURATE["rate_hz"], abs=1)
        assert r["time_of_day"] is not None and r["manoeuvre"] is not None and r["speed_band"] is not None
        assert r["camera_blocked"] is None and r["phash"] is None
    # the summary says why the other telemetry-only drive has none
    assert set(summary["drives_without_clips"]) == {"veh-t/blip"}
    assert summary["drives_without_clips"]["veh-t/blip"].startswith("telemetry only: ")
    assert summary["clips"] == Catalog(str(out)).read("clips").height


def test_video_less_samples_hold_json_and_telemetry(store):
    from fleetcore.store.sample import decode_sample

    out, _ = store
    cat = Catalog(str(out))
    c = _tel_clips(out).row(0, named=True)
    idx = cat.read("index").filter(pl.col("key") == c["member_key"])
    assert sorted(m.split(".", 1)[1] for m in idx["member"]) == ["json", "telemetry.npy"]
    members = {m: cat.read_member(c["shard"], off, size) for m, off, size in idx.select("member", "data_offset", "size").iter_rows()}
    s = decode_sample(members)
    assert s.cameras == [] and s.n_samples == c["n_samples"]
    assert np.nanmin(s.telemetry["speed_mps"]) < 14.0  # the brake is in the window
    from fleetcore.store.verify import verify_clip_store

    assert verify_clip_store(out) == []  # the store verifies, video-less samples decoded too


def test_telemetry_labels_only(store):
    out, _ = store
    cat = Catalog(str(out))
    ids = _tel_clips(out)["clip_id"].to_list()
    labels = cat.read("labels").filter(pl.col("clip_id").is_in(ids))
    assert set(labels["labeller"]) == {"telemetry", "privacy"}  # vision, pedestrians, phash skipped: no frames
    assert labels.filter(pl.col("label") == "sun_elevation_deg")["score"].is_not_null().all()


def test_select_star_from_clip_labels_mixing_gps_and_no_gps(store):
    from fleetcore.query.mining import run_query

    out, _ = store
    res = run_query(out, "SELECT * FROM clip_labels ORDER BY clip_id")
    assert res.height == Catalog(str(out)).read("clips").height
    assert res.schema["sun_elevation_deg"] == pl.Float64
    video = Catalog(str(out)).read("clips").filter(pl.col("drive_id") == "video")["clip_id"].to_list()
    assert res.filter(pl.col("clip_id").is_in(video))["sun_elevation_deg"].null_count() == len(video)


def test_coverage_counts_video_less_clips(store, tmp_path):
    from fleet_cli.mine import coverage_cmd
    from fleetcore.query.coverage import coverage_report

    out, _ = store
    rep = coverage_report(out, ["time_of_day", "manoeuvre"], min_count=1)
    assert rep.total_clips == Catalog(str(out)).read("clips").height == int(rep.table["count"].sum())
    png = tmp_path / "cov.png"
    res = CliRunner().invoke(coverage_cmd, ["--store", str(out), "--dims", "time_of_day,manoeuvre", "--png", str(png)])
    assert res.exit_code == 0, res.output
    assert cv2.imread(str(png)) is not None


def test_backtest_and_preview_of_a_video_less_window(store, tmp_path):
    from fleet_cli.mine import triggers
    from fleetcore.query.backtest import backtest, window_sheet, window_thumbnails
    from fleetcore.triggers.library import TRIGGERS_DIR, load_triggers

    out, _ = store
    res = backtest(out, load_triggers([TRIGGERS_DIR / "hard_brake.yaml"]))
    assert res.windows.filter(pl.col("drive_id") == "brake").height == 1
    w = res.windows.filter(pl.col("drive_id") == "brake").row(0, named=True)
    # one window inside a stored video-less clip, one the store does not hold (from the landing drive)
    outside = {**w, "start_ns": T0, "end_ns": T0 + 500_000_000}
    rows = window_thumbnails(out, [w, outside], n=4)
    assert [(cam, len(frames), src) for _, cam, frames, src in rows] == [("", 0, "telemetry only")] * 2
    img = cv2.imread(str(window_sheet(out, [w, outside], tmp_path / "w.png", n=4)))
    assert img is not None and img.std() > 5  # the placeholder is drawn
    png = tmp_path / "cli.png"
    r = CliRunner().invoke(triggers, ["backtest", str(TRIGGERS_DIR / "hard_brake.yaml"), "--store", str(out), "--json", "--preview", str(png)])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output[r.output.index("{"):])
    assert s["firings_by_trigger"] == {"hard_brake": 1} and cv2.imread(str(png)) is not None


def test_contact_sheet_and_html_of_a_video_less_clip(store, tmp_path):
    from fleetcore.query.preview import contact_sheet, html_preview

    out, _ = store
    clips = Catalog(str(out)).read("clips").sort("drive_id")  # brake, then video
    img = cv2.imread(str(contact_sheet(out, clips, tmp_path / "c.png", frames=3)))
    assert img is not None
    page = html_preview(out, clips, tmp_path / "html").read_text()
    assert "no video (telemetry only)" in page and page.count("<video") == clips.filter(pl.col("drive_id") == "video").height


def test_no_clips_reason(make_drive, tmp_path):
    from fleetcore.clips import no_clips_reason
    from fleetcore.ingest.validate import validate_drive
    from schemas import TRIGGER_EVENTS

    none = TRIGGER_EVENTS.schema.empty_table()
    tel = validate_drive(make_drive(tmp_path, "veh", "tel", cameras=()))
    vid = validate_drive(make_drive(tmp_path, "veh", "vid", telemetry=None))
    assert no_clips_reason(tel, none, []) == "telemetry only: no trigger fired"
    assert no_clips_reason(vid, none, []) == "no trigger fired (the drive has no telemetry)"


def test_steering_only_drive_curates_with_unknown_speed(clip_3s, tmp_path):
    """A log with no speed at all (a steering-only CSV lands so, speed null) curates: its random-sample
    windows become clips whose speed columns are null, labelled by the telemetry labeller."""
    from conftest import build_drive
    from fleetcore.clips import CurateConfig
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    n = 130 * 50
    t = T0 + np.arange(n, dtype=np.int64) * 20_000_000
    steer = pa.table({"t_ns": pa.array(t, pa.int64()), "speed_mps": pa.nulls(n, pa.float64()),
                      "steering_angle_rad": np.radians(5 * np.sin(np.arange(n) / 200.0))})
    build_drive(clip_3s, tmp_path / "landing", "rig", "steer", cameras=(), telemetry=steer)
    summary = run_curate(str(tmp_path / "landing"), str(tmp_path / "store"), CurateConfig(**SIM_CURATE), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert summary["quarantined"] == [] and summary["clips"] >= 2
    cat = Catalog(str(tmp_path / "store"))
    clips = cat.read("clips")
    assert clips["speed_mean_mps"].null_count() == clips.height and set(clips["primary_trigger"]) == {"random_sample"}
    labels = cat.read("clip_labels")
    assert labels.height == clips.height and set(labels["speed_band"]) == {"unknown"}
