"""Every reader works on a clip store on S3 (moto's S3 server on 127.0.0.1, a real S3 API): `fleet mine`,
`fleet coverage`, `fleet triggers backtest`, `fleet datasets build`, the loader over the built dataset and
previews give what they give on a local copy of the same store.

A counting reverse proxy sits between the clients (s3fs, and pyarrow / polars through it) and moto, so
every request and every byte fetched is seen at the wire: no shard (``.tar``) is ever fetched without a
Range header, and previews and dataset builds fetch one member per ranged GET, well under the shards'
sizes."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import CountingProxy, Fetch, free_port, start_empty_moto
import yaml
from click.testing import CliRunner

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

S3_STORE = "s3://fleet/store"


@pytest.fixture(scope="module")
def s3_fleet(tmp_path_factory):
    """moto behind the counting proxy; a small fleet uploaded to s3://fleet/landing and curated into
    s3://fleet/store; a local copy of that store. Yields (proxy, local store, s3fs filesystem)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    start_empty_moto(f"http://127.0.0.1:{port}")  # moto keeps its buckets process-wide: start empty
    proxy = CountingProxy(port)
    tmp = tmp_path_factory.mktemp("s3fleet")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL": proxy.endpoint, "FSSPEC_S3_ENDPOINT_URL": proxy.endpoint}.items():
            mp.setenv(k, v)
        import fsspec
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        try:
            fs = fsspec.filesystem("s3", endpoint_url=proxy.endpoint)
            fs.mkdir("fleet")
            local = _curate_to_s3(fs, tmp)
            yield proxy, local, fs
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            proxy.close()
            server.stop()


def _curate_to_s3(fs, tmp: Path) -> Path:
    from fleetcore.simulate import simulate_fleet
    from pipelines.curate import DEFAULT_RUNNER, build_parser, config_from_args, run_curate

    landing = tmp / "landing"
    simulate_fleet(landing, vehicles=1, drives_per_vehicle=2, cameras=2, width=320, height=180, fps=10.0, duration_s=20.0, seed=7,
                   workers=1)
    fs.put(str(landing), "fleet/landing", recursive=True)
    cfg = config_from_args(build_parser().parse_args(["--input", "x", "--output", "y", "--rate-hz", "5"]))
    cfg = replace(cfg, max_clip_s=4.0)  # several clips per drive, so a shard holds several clips
    summary = run_curate("s3://fleet/landing", S3_STORE, cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert summary["clips"] >= 4 and summary["quarantined"] == []
    local = tmp / "store"
    fs.get("fleet/store", str(local), recursive=True)
    return local


def _shard_gets(fetches: list[Fetch]) -> list[Fetch]:
    return [f for f in fetches if f.method == "GET" and f.key.endswith(".tar")]


def _assert_no_whole_shard_gets(fetches: list[Fetch]) -> None:
    whole = [f for f in _shard_gets(fetches) if not f.range]
    assert not whole, f"shards fetched without a Range header: {whole[:3]}"


def _member_reads(proxy: CountingProxy, mark: int, local: Path) -> dict[str, list[int]]:
    """Bytes of every ranged shard GET since ``mark``, by shard file; each is checked to be one member
    of the shard (its size in the shard index) and the GETs of a shard to be well below its size."""
    from fleetcore.store.catalog import Catalog

    fetches = proxy.since(mark)
    _assert_no_whole_shard_gets(fetches)
    index = Catalog(str(local)).read("index")
    sizes: dict[str, set[int]] = {}
    for shard, size in index.select("shard", "size").iter_rows():
        sizes.setdefault(shard, set()).add(int(size))
    by_shard: dict[str, list[int]] = {}
    for f in _shard_gets(fetches):
        shard = f.key.split("/clips/", 1)[1]
        assert f.status == 206 and f.nbytes in sizes[shard], (f, "not one member of the shard")
        by_shard.setdefault(shard, []).append(f.nbytes)
    for shard, got in by_shard.items():
        total = (local / "clips" / shard).stat().st_size
        assert sum(got) < total / 2, (shard, sum(got), total)
    return by_shard


# --------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------
def test_mine_on_s3_equals_local(s3_fleet):
    proxy, local, _ = s3_fleet
    from fleet_cli.mine import mine
    from fleetcore.query.mining import MiningSession, run_query

    mark = proxy.mark()
    queries = [
        "SELECT clip_id, vehicle_id, drive_id, primary_trigger, duration_s, date FROM clips ORDER BY clip_id",
        "SELECT c.clip_id, l.time_of_day FROM clips c JOIN clip_labels l ON c.clip_id = l.clip_id ORDER BY c.clip_id",
        "SELECT label, count(*) AS n FROM labels GROUP BY label ORDER BY label",
        "SELECT trigger, count(*) AS n FROM triggers GROUP BY trigger ORDER BY trigger",
        "SELECT vehicle_id, drive_id, path FROM drives ORDER BY drive_id",
        "SELECT clip_id, speed_max_kmh FROM telemetry_summary ORDER BY clip_id",
    ]
    for q in queries:
        remote, ref = run_query(S3_STORE, q), run_query(local, q)
        assert remote.height > 0 and remote.equals(ref), q
    assert MiningSession.open(S3_STORE).schemas() == MiningSession.open(local).schemas()
    for args in (["--json"], ["--count"]):
        q = "SELECT clip_id FROM clips WHERE array_contains(triggers, 'random_sample')"
        got = [CliRunner().invoke(mine, [q, "--store", store, *args]) for store in (S3_STORE, str(local))]
        assert got[0].exit_code == 0, got[0].output
        assert json.loads(got[0].stdout) == json.loads(got[1].stdout)
    _totals("mine (6 queries on s3 and on the copy, 2 CLI runs)", proxy.since(mark))
    missing = CliRunner().invoke(mine, ["SELECT 1", "--store", "s3://fleet/nothing-here"])
    assert missing.exit_code != 0 and "s3://fleet/nothing-here: clip store folder does not exist" in missing.output
    assert not _shard_gets(proxy.since(mark))  # queries read the catalog only


def test_coverage_on_s3_equals_local(s3_fleet, tmp_path):
    proxy, local, _ = s3_fleet
    from fleet_cli.mine import coverage_cmd

    out = []
    mark = proxy.mark()
    for store, png in ((S3_STORE, tmp_path / "a.png"), (str(local), tmp_path / "b.png")):
        res = CliRunner().invoke(coverage_cmd, ["--store", store, "--dims", "trigger,time_of_day", "--min-count", "2", "--png", str(png), "--json"])
        assert res.exit_code == 0, res.output
        out.append(json.loads(res.stdout))
    assert out[0] == out[1] and out[0]["total_clips"] > 0
    _totals("coverage", proxy.since(mark))
    _assert_no_whole_shard_gets(proxy.since(mark))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_backtest_on_s3_equals_local(s3_fleet, tmp_path):
    proxy, local, _ = s3_fleet
    from fleet_cli.mine import triggers
    from fleetcore.query.backtest import window_thumbnails
    from fleetcore.store.catalog import Catalog
    from fleetcore.triggers.library import TRIGGERS_DIR

    out = []
    mark = proxy.mark()
    for store in (S3_STORE, str(local)):
        res = CliRunner().invoke(triggers, ["backtest", str(TRIGGERS_DIR), "--store", store, "--json"])
        assert res.exit_code == 0, res.output
        out.append(json.loads(res.stdout))
    assert out[0] == out[1] and out[0]["firings"] == Catalog(S3_STORE).read("triggers").height > 0
    assert out[0]["estimated_bytes"] > 0
    _totals("backtest", proxy.since(mark))
    _assert_no_whole_shard_gets(proxy.since(mark))
    # a window inside a stored clip comes from the store (by range); one before any clip from the landing drive on S3
    cat = Catalog(S3_STORE)
    d = cat.read("drives").sort("drive_id").row(0, named=True)
    assert d["path"].startswith("s3://fleet/landing/")
    first = cat.read("clips").filter(pl.col("drive_id") == d["drive_id"])["start_ns"].min()
    c = cat.read("clips").sort("clip_id").row(0, named=True)
    inside = {**{k: c[k] for k in ("vehicle_id", "drive_id", "date", "triggers")}, "start_ns": c["start_ns"] + 500_000_000,
              "end_ns": c["end_ns"] - 500_000_000}
    outside = {**{k: d[k] for k in ("vehicle_id", "drive_id", "date")}, "triggers": ["x"], "start_ns": d["start_ns"] + 100_000_000,
               "end_ns": min(d["start_ns"] + 2_000_000_000, first - 1)}
    mark = proxy.mark()
    remote = window_thumbnails(S3_STORE, [inside, outside], n=3)
    _assert_no_whole_shard_gets(proxy.since(mark))
    _totals("window thumbnails (one from a shard, one from the landing drive)", proxy.since(mark))
    ref = window_thumbnails(local, [inside, outside], n=3)
    assert [r[3] for r in remote] == ["store", "landing+privacy"] == [r[3] for r in ref]
    for (_, cam_a, fa, _), (_, cam_b, fb, _) in zip(remote, ref):
        assert cam_a == cam_b and len(fa) == len(fb) >= 1 and all(np.array_equal(x, y) for x, y in zip(fa, fb))


def test_preview_reads_members_by_range(s3_fleet, tmp_path):
    proxy, local, _ = s3_fleet
    from fleet_cli.mine import mine

    q = "SELECT clip_id FROM clips ORDER BY clip_id LIMIT 3"
    mark = proxy.mark()
    res = CliRunner().invoke(mine, [q, "--store", S3_STORE, "--preview", str(tmp_path / "s3.png"), "--json"])
    assert res.exit_code == 0, res.output
    reads = _member_reads(proxy, mark, local)
    _totals("preview", proxy.since(mark))
    assert sum(len(v) for v in reads.values()) == 3 * 6  # six thumbnails of each of three clips, one GET each
    res = CliRunner().invoke(mine, [q, "--store", str(local), "--preview", str(tmp_path / "local.png"), "--json"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s3.png").read_bytes() == (tmp_path / "local.png").read_bytes()
    _report("preview", reads, local)


def _totals(what: str, fetches: list[Fetch]) -> None:
    gets = [f for f in fetches if f.method == "GET"]
    log.info("%s: %d requests, %d GETs (%d of shards), %d bytes fetched (%d from shards)", what, len(fetches), len(gets),
             len(_shard_gets(fetches)), sum(f.nbytes for f in gets), sum(f.nbytes for f in _shard_gets(fetches)))


def _report(what: str, reads: dict[str, list[int]], local: Path) -> None:
    for shard, got in sorted(reads.items()):
        size = (local / "clips" / shard).stat().st_size
        log.info("%s: %s: %d ranged GETs, %d of %d bytes (%.1f %%)", what, shard.rsplit("/", 1)[-1], len(got), sum(got), size,
                    100.0 * sum(got) / size)


def test_dataset_build_and_loader_on_s3_equal_local(s3_fleet, tmp_path):
    proxy, local, _ = s3_fleet
    from fleet_cli.datasets import datasets
    from fleetcore.datasets.loader import DatasetLoader
    from fleetcore.store.catalog import Catalog

    clips = Catalog(str(local)).read("clips").sort("clip_id")
    pick = clips.group_by("drive_id", maintain_order=True).head(1)["clip_id"].to_list()  # one clip of each drive
    spec = tmp_path / "s3_unit.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "s3_unit", "sql": "SELECT clip_id FROM clips WHERE clip_id IN (" + ", ".join(f"'{c}'" for c in pick) + ")",
        "cameras": ["front"], "frames_per_clip": 3, "frame_rate_hz": 2.0, "resolution": [64, 48], "format": "webdataset",
        "val_fraction": 0.0, "seed": 0,
    }))
    built = []
    for store, root in ((S3_STORE, tmp_path / "from_s3"), (str(local), tmp_path / "from_local")):
        mark = proxy.mark()
        res = CliRunner().invoke(datasets, ["build", str(spec), "--store", store, "--root", str(root), "--json", "--runner=FnApiRunner"])
        assert res.exit_code == 0, res.output
        built.append(json.loads(res.stdout))
        if store == S3_STORE:
            reads = _member_reads(proxy, mark, local)
            _totals("dataset build", proxy.since(mark))
            assert set(reads) == set(clips.filter(pl.col("clip_id").is_in(pick))["shard"])
            _report("dataset build", reads, local)
    a, b = built
    assert a["version"] == b["version"] and a["samples"] == b["samples"] == len(pick)
    man_a, man_b = (json.loads(Path(r["manifest_path"]).read_text()) for r in built)
    assert [s["sha256"] for s in man_a["shards"]] == [s["sha256"] for s in man_b["shards"]]
    assert man_a["catalog_snapshot"] == Catalog(S3_STORE).snapshot_id()
    # the loader over the dataset built from S3 gives what the one built from the local copy gives
    sa, sb = (list(DatasetLoader(r["path"], shuffle_buffer=0)) for r in built)
    assert [s["__key__"] for s in sa] == [s["__key__"] for s in sb] and len(sa) == len(pick)
    assert all(np.array_equal(x["frames"], y["frames"]) and x["frames"].std() > 5 for x, y in zip(sa, sb))


def test_curate_reads_landing_video_by_range(s3_fleet, tmp_path, monkeypatch):
    """The curate job's readers take an object-store drive in place: validation demuxes each video in one
    ranged pass that also yields its sha256 (no download, no second read for the digest), and extraction
    fetches only the byte ranges around the window it decodes, giving the frames a local copy gives."""
    import hashlib

    import fleetcore.store.fs as fsio
    from fleetcore.ingest.validate import validate_drive
    from fleetcore.simulate import simulate_fleet
    from fleetcore.video.extract import ClipExtractor

    proxy, _, fs = s3_fleet
    local = tmp_path / "landing"
    simulate_fleet(local, vehicles=1, drives_per_vehicle=1, cameras=1, width=640, height=360, fps=10.0, duration_s=60.0, seed=5, workers=1)
    drive = next(p for p in (local / "veh-000").iterdir() if p.is_dir())
    fs.put(str(local), "fleet/long", recursive=True)
    monkeypatch.setattr(fsio, "RANGE_BLOCK", 64 << 10)  # small blocks, so a few-MB test video shows what is fetched
    rel = "cameras/front/000.mp4"
    size = (drive / rel).stat().st_size
    key = f"fleet/long/veh-000/{drive.name}/{rel}"

    def video_gets(mark: int) -> list[Fetch]:
        got = [f for f in proxy.since(mark) if f.method == "GET" and f.key == key]
        assert got and all(f.range and f.status == 206 for f in got), got[:3]
        return got

    mark = proxy.mark()
    vd = validate_drive(f"s3://fleet/long/veh-000/{drive.name}")
    read = sum(f.nbytes for f in video_gets(mark))
    assert vd.path == f"s3://fleet/long/veh-000/{drive.name}"
    assert vd.source_digests[rel] == hashlib.sha256((drive / rel).read_bytes()).hexdigest()
    assert size <= read < 1.5 * size, (read, size)  # one pass (plus the first and last frames proved to decode)
    ref = validate_drive(drive)
    assert ref.frame_index.equals(vd.frame_index) and ref.source_digests == vd.source_digests

    t0 = vd.start_ns + 30_000_000_000
    mark = proxy.mark()
    with ClipExtractor(vd.path, vd.manifest, vd.frame_index, max_side=320) as ex:
        remote = ex.extract(t0, t0 + 2_000_000_000, rate_hz=5.0)
    read = sum(f.nbytes for f in video_gets(mark))
    # the container's index and the window's GOPs, a few blocks: not the file (2 s of 60 s)
    assert read <= 4 * fsio.RANGE_BLOCK and read < size / 4, (read, size)
    with ClipExtractor(drive, ref.manifest, ref.frame_index, max_side=320) as ex:
        here = ex.extract(t0, t0 + 2_000_000_000, rate_hz=5.0)
    assert len(remote.frames["front"]) == len(here.frames["front"]) == 10
    assert all(a is not None and np.array_equal(a, b) for a, b in zip(remote.frames["front"], here.frames["front"]))
