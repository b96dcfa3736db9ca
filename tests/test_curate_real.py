"""The curate job on the shared real recordings: a real dashcam video yields background clips; the
comma2k19 segment (telemetry only, its video is absent) yields trigger events and video-less clips."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest
import webdataset as wds

from fleetcore.ingest.importers import import_comma2k19, import_dashcam
from fleetcore.clips import CurateConfig
from pipelines.curate import DEFAULT_RUNNER, run_curate

pytestmark = pytest.mark.slow


def highway_gpx(path, *, start: dt.datetime, seconds: int = 10, speed: float = 25.0):
    """A GPX track at highway speed (25 m/s = 90 km/h) near Palo Alto, one fix per second."""
    pts = []
    for i in range(seconds):
        lat = 37.4 + math.degrees(speed * i * math.cos(math.radians(45)) / 6_371_000.0)
        lon = -122.1 + math.degrees(speed * i * math.sin(math.radians(45)) / (6_371_000.0 * math.cos(math.radians(37.4))))
        t = (start + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        pts.append(f'<trkpt lat="{lat:.7f}" lon="{lon:.7f}"><time>{t}</time><extensions><speed>{speed}</speed></extensions></trkpt>')
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="fleet-tests" '
                    'xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>' + "".join(pts) + "</trkseg></trk></gpx>\n")
    return path


@pytest.fixture(scope="module")
def real_store(real_data, tmp_path_factory):
    landing = tmp_path_factory.mktemp("real") / "landing"
    # The video's container says it was made 2016-08-28T21:16:08Z (14:16 in California): daylight.
    gpx = highway_gpx(landing.parent / "track.gpx", start=dt.datetime(2016, 8, 28, 21, 16, 8, tzinfo=dt.timezone.utc))
    import_dashcam(real_data / "video" / "udacity_lanelines_solidWhiteRight.mp4", landing, vehicle_id="udacity",
                   drive_id="solid-white-right", telemetry=gpx)
    import_dashcam(real_data / "video" / "udacity_vehicledetection_test_video.mp4", landing, vehicle_id="udacity", drive_id="vehicle-detection")
    import_comma2k19(real_data / "telemetry" / "comma2k19_b0c9d2329ad1606b_2018-08-02--08-34-47_seg40", landing)
    store = landing.parent / "store"
    cfg = CurateConfig()
    summary = run_curate(str(landing), str(store), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    return store, summary


def test_real_drives_are_curated_without_quarantine(real_store):
    _store, summary = real_store
    assert summary["quarantined"] == []
    assert summary["drives_curated"] == 3


def test_dashcam_video_yields_random_sample_clips(real_store):
    store, _ = real_store
    cat = pl.read_parquet(store / "catalog" / "clips" / "**" / "*.parquet")
    dash = cat.filter(pl.col("vehicle_id") == "udacity")
    assert sorted(dash["drive_id"].unique().to_list()) == ["solid-white-right", "vehicle-detection"]
    assert all("random_sample" in t for t in dash["triggers"].to_list())
    assert dash["missing_frames"].sum() == 0
    shards = sorted(str(p) for p in (store / "clips").rglob("*.tar"))
    n = 0
    for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode("rgb8"):
        rec = s["json"]
        if rec["record"]["vehicle_id"] != "udacity":
            continue
        frames = [k for k in s if k.startswith("front.") and k.endswith(".jpg")]
        assert len(frames) == len(rec["sample_times_ns"])
        h, w = s[frames[0]].shape[:2]
        assert max(h, w) == 640 and (w, h) in ((640, 360), (640, 360))
        assert s[frames[0]].mean() > 40  # a real daylight frame, not black
        n += 1
    assert n == dash.height


def test_comma2k19_segment_yields_trigger_events_and_video_less_clips(real_store):
    store, _ = real_store
    ev = pl.read_parquet(store / "triggers" / "**" / "*.parquet").filter(pl.col("vehicle_id") == "b0c9d2329ad1606b")
    assert ev.height >= 1
    assert set(ev["trigger"].to_list()) >= {"random_sample"}
    tel = pl.read_parquet(store / "telemetry" / "**" / "*.parquet").filter(pl.col("vehicle_id") == "b0c9d2329ad1606b")
    assert 7.9 <= tel["speed_mps"].min() and tel["speed_mps"].max() <= 19.9
    drives = pl.read_parquet(store / "drives" / "**" / "*.parquet")
    row = drives.filter(pl.col("vehicle_id") == "b0c9d2329ad1606b").row(0, named=True)
    assert row["cameras"] == [] and row["date"] == "2018-08-02"
    from fleetcore.store.catalog import Catalog

    gen = next(g for g in Catalog(str(store)).generations() if g.vehicle_id == "b0c9d2329ad1606b")
    assert gen.clips >= 1 and len(gen.shards) >= 1  # its windows are clips without video
    clips = Catalog(str(store)).read("clips").filter(pl.col("vehicle_id") == "b0c9d2329ad1606b")
    assert clips.height == gen.clips and all(c == [] for c in clips["cameras"].to_list())
    assert clips["manoeuvre"].is_not_null().all() and clips["speed_band"].is_not_null().all()


def test_select_star_from_clip_labels_of_the_real_store(real_store):
    """Drives with GPS (the GPX track, comma2k19) and without (the second dashcam video) in one store:
    every label column has one dtype."""
    from fleetcore.query.mining import run_query

    store, summary = real_store
    res = run_query(store, "SELECT * FROM clip_labels")
    assert res.height == summary["clips"] and res.schema["sun_elevation_deg"] == pl.Float64


def test_dashcam_clips_get_sensible_labels(real_store):
    """Daytime, highway speed band where telemetry exists, no camera blocked (pinned)."""
    store, _ = real_store
    cat = pl.read_parquet(store / "catalog" / "clips" / "**" / "*.parquet").filter(pl.col("vehicle_id") == "udacity")
    for r in cat.iter_rows(named=True):
        assert r["time_of_day"] == "day", r
        assert r["camera_blocked"] is False and r["camera_blurry"] is False
        assert r["privacy"] is True and r["light_conflict"] in ("none", "unknown")
    with_gps = cat.filter(pl.col("drive_id") == "solid-white-right").row(0, named=True)
    assert with_gps["speed_band"] == "highway" and with_gps["road_type"] == "highway"
    assert cat.filter(pl.col("drive_id") == "vehicle-detection")["speed_band"].to_list() in ([None], ["unknown"])
