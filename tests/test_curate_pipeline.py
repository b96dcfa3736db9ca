"""The curate job on a simulated fleet: trigger precision / recall against ground truth, multi-camera
alignment on decoded frames, idempotence, resume after a kill, runners (local modes and Dask)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
import numpy as np
import polars as pl
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from conftest import SIM_CURATE
from fleetcore.store.shards import verify_store
from fleetcore.clips import CurateConfig
from fleetcore.landing.drives import GROUND_TRUTH, list_drives
from pipelines.curate import (
    DEFAULT_RUNNER,
    ReadLandingDrives,
    ValidateDrives,
    run_curate,
)

pytestmark = pytest.mark.slow

TRIGGER_TYPES = [
    "hard_brake", "harsh_acceleration", "sharp_turn", "lane_change_left", "lane_change_right", "stop_and_go",
    "high_speed", "disengagement", "shadow_disagreement", "gps_glitch",
]


def _cfg(**kw) -> CurateConfig:
    return CurateConfig(**{**SIM_CURATE, **kw})


@pytest.fixture(scope="module")
def fleet(sim_fleet) -> Path:
    return sim_fleet


@pytest.fixture(scope="module")
def store(sim_store) -> tuple[Path, dict]:
    return sim_store


def _shard_digests(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((store / "clips").rglob("*.tar"))}


def _overlaps(a0, a1, b0, b1, tol_ns=0):
    return a0 <= b1 + tol_ns and b0 <= a1 + tol_ns


def test_store_is_complete_and_verifies(store):
    out, summary = store
    assert summary["drives_curated"] == 6 and summary["quarantined"] == []
    assert summary["clips"] > 6
    m = summary["metrics"]  # Beam counters of the run
    assert m["drives_curated"] == 6 and m["clips_extracted"] == summary["clips"]
    assert m["frames_decoded"] > 0 and m["shard_bytes_written"] == summary["bytes_written"]
    assert verify_store(out / "clips") == []
    man = json.loads((out / "clips" / "manifest.json").read_text())
    assert man["n_samples"] == summary["clips"]
    cat = pl.read_parquet(out / "catalog" / "clips" / "**" / "*.parquet")
    assert cat.height == summary["clips"] and cat["clip_id"].n_unique() == cat.height
    assert not list((out / "staging").glob("*.tar")), "staged fragments are removed once packed"
    # telemetry, frame index and triggers are partitioned by date
    assert list((out / "telemetry").glob("date=*/*.parquet")) and list((out / "frames").glob("date=*/*.parquet"))


def test_trigger_precision_and_recall_against_ground_truth(fleet, store):
    out, _ = store
    events = pl.read_parquet(out / "triggers" / "**" / "*.parquet")
    gt = defaultdict(list)
    for ref in list_drives(fleet):
        for ev in json.loads((ref.path / GROUND_TRUTH).read_text())["events"]:
            gt[(ev["type"], ref.drive_id)].append((ev["start_ns"], ev["end_ns"]))
    tol = 500_000_000
    report = {}
    for trig in TRIGGER_TYPES:
        fired = events.filter(pl.col("trigger") == trig)
        tp_fired = sum(
            any(_overlaps(r["event_start_ns"], r["event_end_ns"], s, e, tol) for s, e in gt.get((trig, r["drive_id"]), []))
            for r in fired.iter_rows(named=True)
        )
        n_gt = sum(len(v) for (t, _d), v in gt.items() if t == trig)
        found = sum(
            any(_overlaps(r["event_start_ns"], r["event_end_ns"], s, e, tol) for r in fired.filter(pl.col("drive_id") == d).iter_rows(named=True))
            for (t, d), v in gt.items() if t == trig for s, e in v
        )
        precision = tp_fired / fired.height if fired.height else (1.0 if n_gt == 0 else 0.0)
        recall = found / n_gt if n_gt else 1.0
        report[trig] = (precision, recall, fired.height, n_gt)
    missing = [t for t, (_p, _r, _f, n) in report.items() if n == 0]
    assert not missing, f"the simulated fleet should cover every trigger type; missing {missing}"
    bad = {t: v for t, v in report.items() if v[0] < 0.95 or v[1] < 0.95}
    assert not bad, f"precision/recall below 0.95: {bad}"


def test_every_ground_truth_event_is_inside_a_clip_that_names_it(fleet, store):
    out, _ = store
    cat = pl.read_parquet(out / "catalog" / "clips" / "**" / "*.parquet")
    for ref in list_drives(fleet):
        clips = cat.filter(pl.col("drive_id") == ref.drive_id)
        for ev in json.loads((ref.path / GROUND_TRUTH).read_text())["events"]:
            hit = clips.filter((pl.col("start_ns") <= ev["end_ns"]) & (pl.col("end_ns") >= ev["start_ns"]))
            assert hit.height >= 1, (ref.drive_id, ev)
            assert any(ev["type"] in t for t in hit["triggers"].to_list()), (ev, hit["triggers"].to_list())


def test_multi_camera_samples_are_aligned_on_decoded_frames(plain_store):
    """Decode every JPEG of the store and read the simulator's frame marker (the frame's vehicle time):
    it must equal the recorded presentation time and lie within half a sample period of the sample time.
    (A store without the privacy stage: the marker's strip of black and white cells is the shape of
    a small licence plate, which the plate detector may blur.)"""
    import webdataset as wds

    from fleetcore.simulate import decode_marker, marker_value

    _, out = plain_store
    shards = sorted(str(p) for p in (out / "clips").rglob("*.tar"))
    checked = 0
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode("rgb8"):
        rec = sample["json"]
        times = np.asarray(rec["sample_times_ns"], dtype=np.int64)
        half = 0.5e9 / rec["record"]["sample_rate_hz"]
        for cam in rec["cameras"]:
            pts = rec["pts_ns"][cam]
            for i, t in enumerate(times):
                key = f"{cam}.{i:03d}.jpg"
                if pts[i] is None:
                    assert key not in sample
                    continue
                assert abs(pts[i] - int(t)) <= half
                rgb = sample[key]
                got = decode_marker(np.ascontiguousarray(rgb[:, :, ::-1]))
                assert got == marker_value(pts[i]), (rec["key"], cam, i)
                checked += 1
    assert checked > 250


def test_second_run_is_a_noop(fleet, store):
    out, _ = store
    before = _shard_digests(out)
    summary = run_curate(str(fleet), str(out), _cfg(), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert summary["drives_curated"] == 0 and summary["clips"] == 0 and summary["shards_written"] == 0
    assert _shard_digests(out) == before


def test_killed_run_restarts_to_the_same_checksums(fleet, store, tmp_path, monkeypatch):
    out, _ = store
    reference = _shard_digests(out)
    dst = tmp_path / "store"
    import fleetcore.clips as fc

    real_pack = fc.pack_drive
    calls = {"n": 0}

    def dying_pack(*a, **kw):
        calls["n"] += 1
        raise KeyboardInterrupt("simulated kill while packing")

    monkeypatch.setattr(fc, "pack_drive", dying_pack)
    import pipelines.curate as pc

    monkeypatch.setattr(pc, "pack_drive", dying_pack)
    with pytest.raises(BaseException):
        run_curate(str(fleet), str(dst), _cfg(), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert calls["n"] >= 1
    staged = list((dst / "staging").glob("*.tar"))
    assert staged, "the killed run left its extracted clips staged"
    # a half-written shard from the killed run
    (dst / "clips" / "date=2026-11-20").mkdir(parents=True, exist_ok=True)
    (dst / "clips" / "date=2026-11-20" / ".partial.tar.tmp").write_bytes(b"\0" * 1000)
    monkeypatch.setattr(fc, "pack_drive", real_pack)
    monkeypatch.setattr(pc, "pack_drive", real_pack)
    summary = run_curate(str(fleet), str(dst), _cfg(), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert summary["drives_curated"] == 6
    assert _shard_digests(dst) == reference
    assert verify_store(dst / "clips") == []


def test_multi_processing_mode_gives_the_same_store(fleet, store, tmp_path):
    out, _ = store
    dst = tmp_path / "mp"
    run_curate(str(fleet), str(dst), _cfg(), beam_args=[f"--runner={DEFAULT_RUNNER}", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert _shard_digests(dst) == _shard_digests(out)


def test_post_processing_threads_do_not_change_the_store(fleet, store, tmp_path):
    """The store fixture ran with the defaults: --post-workers 2 (stages and encoding of decoded clips
    on worker threads, labels beside privacy) and --opencv-threads 1. All in the decoding thread,
    with OpenCV's own pool on, gives the same bytes; the worker puts the caller's OpenCV setting back."""
    import cv2

    out, _ = store
    dst = tmp_path / "serial"
    cfg = _cfg(post_workers=0, opencv_threads=2)
    assert (cfg.post_workers, cfg.opencv_threads) == (0, 2) and cfg.version() == _cfg().version()
    before = cv2.getNumThreads()
    run_curate(str(fleet), str(dst), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert cv2.getNumThreads() == before
    assert _shard_digests(dst) == _shard_digests(out)
    for table in ("clips", "labels"):
        a = pl.read_parquet(out / "catalog" / table / "**" / "*.parquet")
        b = pl.read_parquet(dst / "catalog" / table / "**" / "*.parquet")
        assert a.sort(a.columns[:4]).equals(b.sort(b.columns[:4]))


def test_dask_runner_on_a_local_cluster_gives_the_same_store(fleet, store, tmp_path):
    from distributed import Client, LocalCluster

    out, _ = store
    dst = tmp_path / "dask"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        run_curate(
            str(fleet), str(dst), _cfg(),
            beam_args=["--runner=apache_beam.runners.dask.dask_runner.DaskRunner", f"--dask_client_address={cluster.scheduler_address}", "--dask_npartitions=4"],
        )
        assert client.scheduler_info()["workers"]
    assert _shard_digests(dst) == _shard_digests(out)
    a = pl.read_parquet(out / "catalog" / "clips" / "**" / "*.parquet").sort("clip_id")
    b = pl.read_parquet(dst / "catalog" / "clips" / "**" / "*.parquet").sort("clip_id")
    assert a.equals(b)


def test_read_and_validate_transforms_with_test_pipeline(fleet, tmp_path):
    """The first stages as composite transforms: incomplete uploads are not read, bad drives become
    quarantine records on the dead-letter path, good drives pass."""
    landing = tmp_path / "landing"
    shutil.copytree(fleet, landing)
    refs = list_drives(landing)
    # one broken upload (zero-byte video), one still uploading
    broken = refs[0].path
    (next((broken / "cameras").rglob("*.mp4"))).write_bytes(b"")
    (refs[1].path / "_UPLOAD_COMPLETE").unlink()
    good = sorted(r.drive_id for r in refs[2:])
    with BeamTestPipeline(runner=DEFAULT_RUNNER) as p:
        tagged = (
            p
            | ReadLandingDrives(str(landing))
            | ValidateDrives(str(tmp_path / "store"), "cfg-test")
        )
        ok = tagged | "ok" >> beam.Filter(lambda kv: kv[0] == "ok") | "ids" >> beam.Map(lambda kv: kv[1].drive_id)
        bad = tagged | "bad" >> beam.Filter(lambda kv: kv[0] == "quarantine") | "codes" >> beam.Map(lambda kv: (kv[1]["drive_id"], kv[1]["code"]))
        assert_that(ok, equal_to(good), label="valid drives")
        assert_that(bad, equal_to([(refs[0].drive_id, "video_empty")]), label="quarantined drives")
