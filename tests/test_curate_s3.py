"""The curate job reads and writes through URIs: landing zone and clip store on S3 (moto's S3 server on
127.0.0.1, a real S3 API) give the same shards as a local run."""

from __future__ import annotations

import hashlib

import pytest

from conftest import free_port, start_empty_moto

from fleetcore.store.fs import glob, read_bytes
from fleetcore.landing.drives import list_drives
from fleetcore.clips import CurateConfig
from pipelines.curate import DEFAULT_RUNNER, run_curate

pytestmark = pytest.mark.slow



@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    start_empty_moto(f"http://127.0.0.1:{port}")  # moto keeps its buckets process-wide: start empty
    endpoint = f"http://127.0.0.1:{port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(k, v)
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3", endpoint_url=endpoint)
    fs.mkdir("fleet")
    try:
        yield fs
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def test_curate_from_s3_landing_to_s3_store(tmp_path, s3):
    from fleetcore.simulate import simulate_fleet

    local = tmp_path / "landing"
    simulate_fleet(local, vehicles=1, drives_per_vehicle=2, cameras=2, width=320, height=180, fps=10.0, duration_s=20.0, seed=3)
    s3.put(str(local), "fleet/landing", recursive=True)
    # an incomplete upload on S3 is not read
    s3.pipe("fleet/landing/veh-009/uploading/manifest.json", b"{}")
    refs = list_drives("s3://fleet/landing")
    assert [r.drive_id for r in refs] == sorted(p.name for p in (local / "veh-000").iterdir())
    assert list_drives("s3://fleet/landing", include_incomplete=True)[-1].drive_id == "uploading"

    cfg = CurateConfig()
    remote = run_curate("s3://fleet/landing", "s3://fleet/store", cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    ref = run_curate(str(local), str(tmp_path / "store"), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert remote["clips"] == ref["clips"] > 0 and remote["quarantined"] == []

    def digests(paths):
        return sorted(hashlib.sha256(read_bytes(p)).hexdigest() for p in paths)

    remote_shards = glob("s3://fleet/store/clips/date=*/*.tar")
    assert remote_shards and digests(remote_shards) == digests(sorted(str(p) for p in (tmp_path / "store" / "clips").rglob("*.tar")))
    assert s3.exists("fleet/store/clips/manifest.json") and s3.exists("fleet/store/catalog/clips")
    assert not s3.exists("fleet/store/staging") or not s3.glob("fleet/store/staging/*.tar")
    # the drive index records where each drive lives
    import pyarrow.parquet as pq

    row = pq.read_table(glob("s3://fleet/store/drives/date=*/*.parquet")[0].replace("s3://", ""), filesystem=s3).to_pylist()[0]
    assert row["path"].startswith("s3://fleet/landing/veh-000/")
    # a second run over S3 is a no-op
    again = run_curate("s3://fleet/landing", "s3://fleet/store", cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert again["drives_curated"] == 0 and again["clips"] == 0


def test_fleet_validate_on_an_s3_landing_zone(tmp_path, s3):
    """`fleet validate s3://...` reads the drives in place and reports what it reports for a local copy,
    a broken upload quarantined with its reason."""
    import json

    from click.testing import CliRunner

    from fleet_cli.main import cli
    from fleetcore.simulate import simulate_fleet

    local = tmp_path / "landing"
    simulate_fleet(local, vehicles=1, drives_per_vehicle=2, cameras=1, width=160, height=96, fps=10.0, duration_s=6.0, seed=4)
    bad = sorted((local / "veh-000").iterdir())[1]
    video = next((bad / "cameras").rglob("*.mp4"))
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])  # an interrupted upload
    s3.put(str(local), "fleet/vlanding", recursive=True)
    runner = CliRunner()
    remote = runner.invoke(cli, ["validate", "s3://fleet/vlanding", "--json"])
    here = runner.invoke(cli, ["validate", str(local), "--json"])
    assert remote.exit_code == here.exit_code == 0, remote.output
    r, h = json.loads(remote.output), json.loads(here.output)
    assert r["drives_valid"] == h["drives_valid"] == 1 and r["video_frames"] == h["video_frames"] > 0
    assert [(q["drive"], q["code"]) for q in r["quarantine"]] == [(q["drive"], q["code"]) for q in h["quarantine"]]
    assert r["quarantine"][0]["code"].startswith("video_")
    missing = runner.invoke(cli, ["validate", "s3://fleet/nowhere"])
    assert missing.exit_code == 2 and "not a folder" in missing.output
