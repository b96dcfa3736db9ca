"""A clip whose privacy stage fails is quarantined with its reason and never written unblurred; its
drive is still curated and the other drives go on."""

from __future__ import annotations

import json

import polars as pl
import pytest

from fleetcore.clips import CurateConfig
from fleetcore.stages.options import PrivacyOptions
from pipelines.curate import DEFAULT_RUNNER, run_curate

pytestmark = pytest.mark.slow


def test_privacy_failure_quarantines_clips_not_drives(tmp_path):
    from fleetcore.simulate import simulate_fleet

    landing = tmp_path / "landing"
    simulate_fleet(landing, vehicles=1, drives_per_vehicle=1, cameras=1, width=320, height=180, fps=10.0, duration_s=20.0, seed=3)
    broken = tmp_path / "cascades"
    broken.mkdir()
    (broken / "haarcascade_frontalface_default.xml").write_text("<opencv_storage>not a cascade</opencv_storage>")
    cfg = CurateConfig(stages=("privacy",), privacy=PrivacyOptions(backend="haar", detectors=("face", "plate"), cascade_dirs=(str(broken),)))
    summary = run_curate(str(landing), str(tmp_path / "store"), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])

    assert summary["drives_curated"] == 1
    assert summary["clips"] == 0 and summary["shards_written"] == 0
    bad = summary["quarantined"]
    assert bad and all(q["code"] == "privacy_failed" and q["clip_id"] and q["stage"] == "extract" for q in bad)
    records = sorted((tmp_path / "store" / "quarantine" / "clips").glob("*.json"))
    assert [json.loads(p.read_text())["clip_id"] for p in records] == sorted(q["clip_id"] for q in bad)
    assert not list((tmp_path / "store").rglob("*.tar")), "no clip reached a shard or stayed staged"
    drives = pl.read_parquet(tmp_path / "store" / "drives" / "**" / "*.parquet")
    assert drives.height == 1
