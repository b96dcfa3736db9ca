"""Store integrity and clip identity: clip ids carry the vehicle, a sample-key collision quarantines
its drive (the run goes on), a symlinked drive folder is refused, ``fleet store verify`` (also
``fleet verify --store``) checks shards, members and catalog rows, locally and on S3, and the
dataset loader checks what it reads. (The fault suite, tests/faults/test_store_faults.py, holds
the damaged-store cases.)"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import build_drive, encode_testsrc, free_port, start_empty_moto
from fleetcore.clips import CurateConfig, clip_id_for
from fleetcore.errors import DriveError
from fleetcore.ingest.validate import validate_drive
from fleetcore.store.catalog import Catalog
from fleetcore.store.layout import StoreLayout
from fleetcore.store.manifest import read_manifest
from fleetcore.store.verify import verify_clip_store
from pipelines.curate import DEFAULT_RUNNER, run_curate


def test_clip_ids_carry_the_vehicle_and_stay_deterministic():
    a = clip_id_for("veh-a", "drive-1", 5_000_000_000, 8_000_000_000, "v1")
    assert a == clip_id_for("veh-a", "drive-1", 5_000_000_000, 8_000_000_000, "v1")
    assert a != clip_id_for("veh-b", "drive-1", 5_000_000_000, 8_000_000_000, "v1")
    assert a.startswith("veh-a__drive-1_5000_") and "." not in clip_id_for("veh.a", "d.1", 0, 1, "v")
    assert clip_id_for("veh.a", "d.1", 0, 1, "v") != clip_id_for("veh-a", "d-1", 0, 1, "v")  # the hash is over the real ids
    long = clip_id_for("v" * 128, "d" * 128, 0, 1, "v")
    assert len(long) <= 200  # a WebDataset key of the store (KEY_RE)


def test_symlinked_drive_folder_is_path_escape(tmp_path, clip_3s):
    outside = build_drive(clip_3s, tmp_path / "elsewhere", "veh-x", "drive-9")
    landing = tmp_path / "landing"
    (landing / "veh-x").mkdir(parents=True)
    os.symlink(outside, landing / "veh-x" / "drive-9")
    with pytest.raises(DriveError) as err:
        validate_drive(landing / "veh-x" / "drive-9")
    assert err.value.code == "path_escape" and "symbolic link" in str(err.value)
    # a linked vehicle folder too
    landing2 = tmp_path / "landing2"
    landing2.mkdir()
    os.symlink(outside.parent, landing2 / "veh-x")
    with pytest.raises(DriveError) as err:
        validate_drive(landing2 / "veh-x" / "drive-9")
    assert err.value.code == "path_escape"
    assert validate_drive(outside).drive_id == "drive-9"  # the folder itself is fine where it is


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return encode_testsrc(tmp_path_factory.mktemp("integrity") / "clip.mp4")


@pytest.mark.slow
def test_collision_quarantines_only_its_drive_and_symlinked_drive_is_refused(tmp_path, clip, monkeypatch):
    """veh-a/drive-1 and veh-b/drive-1 are the same files; veh-a's clips were staged by a killed run;
    veh-c/drive-2's clip tasks come out twice (a sample key collision); veh-x/drive-9 links out of
    the landing zone. One run: veh-a and veh-b curated, veh-c and veh-x quarantined with one line each."""
    import pipelines.curate as curate
    from fleetcore.clips import clip_tasks, extract_clips, find_drive_events, load_trigger_library

    landing, store = tmp_path / "landing", tmp_path / "store"
    for vehicle, drive in (("veh-a", "drive-1"), ("veh-b", "drive-1"), ("veh-c", "drive-2")):
        build_drive(clip, landing, vehicle, drive)
    outside = build_drive(clip, tmp_path / "outside", "veh-x", "drive-9")
    (landing / "veh-x").mkdir()
    os.symlink(outside, landing / "veh-x" / "drive-9")
    cfg = CurateConfig(stages=())
    # a killed earlier run left veh-a's clips staged (fragments and rows) in the store
    vd = validate_drive(landing / "veh-a" / "drive-1")
    tasks = clip_tasks(vd, find_drive_events(vd, load_trigger_library(cfg), cfg), cfg)
    assert tasks and all(not hasattr(r, "error") for r in extract_clips(vd, tasks, cfg, StoreLayout(str(store))))

    def twice_for_veh_c(vd, events, cfg):
        out = clip_tasks(vd, events, cfg)
        return out + out if vd.vehicle_id == "veh-c" else out

    monkeypatch.setattr(curate, "clip_tasks", twice_for_veh_c)
    summary = run_curate(str(landing), str(store), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    got = {(q["vehicle_id"], q["drive_id"]): q for q in summary["quarantined"]}
    assert set(got) == {("veh-c", "drive-2"), ("veh-x", "drive-9")}
    assert got[("veh-c", "drive-2")]["code"] == "duplicate_key" and got[("veh-c", "drive-2")]["stage"] == "pack"
    assert "appears twice" in got[("veh-c", "drive-2")]["message"] and "\n" not in got[("veh-c", "drive-2")]["message"]
    assert got[("veh-x", "drive-9")]["code"] == "path_escape"
    assert Path(got[("veh-c", "drive-2")]["record"]).is_file()
    current = {(g.vehicle_id, g.drive_id) for g in read_manifest(StoreLayout(str(store))).current()}
    assert current == {("veh-a", "drive-1"), ("veh-b", "drive-1")}
    clips = Catalog(str(store)).read("clips")
    assert sorted(clips["vehicle_id"].to_list()) == ["veh-a", "veh-b"]
    assert clips["clip_id"].n_unique() == clips.height == 2
    assert verify_clip_store(store) == []
    # a rerun does the same (nothing left behind blocks the landing zone)
    again = run_curate(str(landing), str(store), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert {(q["vehicle_id"], q["drive_id"]) for q in again["quarantined"]} == set(got)


@pytest.fixture(scope="module")
def store(tmp_path_factory, clip) -> Path:
    tmp = tmp_path_factory.mktemp("integrity_store")
    landing, out = tmp / "landing", tmp / "store"
    build_drive(clip, landing, "veh-a", "drive-1")
    build_drive(clip, landing, "veh-b", "drive-2")
    run_curate(str(landing), str(out), CurateConfig(stages=()), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    return out


def test_verify_passes_on_an_intact_store_and_the_cli_says_ok(store):
    from fleet_cli.main import cli

    assert verify_clip_store(store) == []
    res = CliRunner().invoke(cli, ["store", "verify", str(store)])
    assert res.exit_code == 0 and res.output.strip() == f"{store}: OK"
    res = CliRunner().invoke(cli, ["verify", "--store", str(store), "--json"])
    assert res.exit_code == 0 and '"ok": true' in res.output
    assert CliRunner().invoke(cli, ["verify"]).exit_code == 2  # a dataset or --store


def test_verify_reports_an_undecodable_member_whose_sums_were_resealed(store, tmp_path):
    """Sums that match say nothing about decoding: a JPEG without its start marker, with the manifest's
    sha256s recomputed for it, is still reported."""
    import hashlib

    from fleetcore.store.manifest import commit
    from fleetcore.store.tario import scan_tar

    st = tmp_path / "store"
    shutil.copytree(store, st)
    layout = StoreLayout(str(st))
    gen = read_manifest(layout).current()[0]
    entry = gen.shards[0]
    path = Path(layout.shard_path(entry["name"]))
    scan = scan_tar(path)
    jpg = next(m for m in scan.members if m.name.endswith(".jpg"))
    data = bytearray(path.read_bytes())
    data[jpg.data_offset: jpg.data_offset + 2] = b"\0\0"
    path.write_bytes(bytes(data))
    sample = hashlib.sha256(bytes(data[: scan.records_end])).hexdigest()  # the shard holds one sample
    assert entry["samples"] == 1
    new = {**entry, "sha256": hashlib.sha256(bytes(data)).hexdigest(), "sample_sha256": [sample]}
    commit(layout, add=[replace(gen, shards=(new,))])
    problems = verify_clip_store(st)
    assert [(p.code, p.member) for p in problems] == [("member_undecodable", jpg.name)], problems
    assert verify_clip_store(st, decode=False) == []


def test_verify_reports_catalog_rows_that_do_not_match(store, tmp_path):
    import pyarrow as pa

    from fleetcore.store.fs import read_parquet, write_parquet

    st = tmp_path / "store"
    shutil.copytree(store, st)
    layout = StoreLayout(str(st))
    gen = read_manifest(layout).current()[0]
    ip = layout.resolve(gen.table("index"))
    t = read_parquet(ip)
    rows = t.to_pylist()
    rows[1]["data_offset"] += 512
    write_parquet(pa.Table.from_pylist(rows[:-1], schema=t.schema), ip)
    cp = layout.resolve(gen.table("clips"))
    clips = read_parquet(cp)
    write_parquet(clips.slice(0, 0), cp)
    codes = [p.code for p in verify_clip_store(st)]
    assert "catalog_offset_mismatch" in codes and "catalog_count_mismatch" in codes and "catalog_row_missing" in codes
    # a missing manifest is one store-level problem
    shutil.rmtree(st / "_commits")
    shutil.rmtree(st / "clips")
    problems = verify_clip_store(st)
    assert [p.code for p in problems] == ["manifest_missing"] and problems[0].shard is None


@pytest.mark.slow
def test_verify_works_on_s3(store, monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    start_empty_moto(endpoint)
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": endpoint, "FSSPEC_S3_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(k, v)
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    try:
        fs = fsspec.filesystem("s3", endpoint_url=endpoint)
        fs.mkdir("integrity")
        fs.put(str(store), "integrity/store", recursive=True)
        assert verify_clip_store("s3://integrity/store") == []
        name = read_manifest(StoreLayout(str(store))).current()[0].shards[0]["name"]
        key = f"integrity/store/clips/{name}"
        data = bytearray(fs.cat_file(key))
        data[len(data) // 3] ^= 0x10
        fs.pipe_file(key, bytes(data))
        problems = verify_clip_store("s3://integrity/store")
        assert problems and problems[0].shard == name and problems[0].code == "sha256_mismatch"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


@pytest.mark.slow
def test_loader_checks_arrow_samples(store, tmp_path):
    """An Arrow dataset whose frame bytes changed: raised as CorruptSample, or skipped."""
    import pyarrow as pa
    import yaml

    from fleetcore.datasets.build import INDEX_NAME
    from fleetcore.datasets.loader import CorruptSample, DatasetLoader
    from pipelines.build_dataset import run_build_dataset

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "arrowcheck", "where": "true", "cameras": ["front"], "frames_per_clip": 2, "frame_rate_hz": 2.0,
                                    "resolution": [32, 24], "format": "arrow", "privacy_required": False, "val_fraction": 0.0}))
    res = run_build_dataset(spec, store=str(store), datasets_root=tmp_path / "root", beam_args=["--runner=FnApiRunner"])
    ds = tmp_path / "ds"
    shutil.copytree(res.path, ds)
    with pa.memory_map(str(ds / INDEX_NAME), "r") as mm:
        row = pa.ipc.open_file(mm).read_all().to_pylist()[0]
    p = ds / row["shard"]
    data = bytearray(p.read_bytes())
    data[row["data_offset"] + 7] ^= 0xFF
    p.write_bytes(bytes(data))
    assert len(list(DatasetLoader(res.path, shuffle_buffer=0))) == res.samples  # the original is intact
    with pytest.raises(CorruptSample) as err:
        list(DatasetLoader(ds, shuffle_buffer=0))
    assert err.value.key == row["key"]
    ld = DatasetLoader(ds, shuffle_buffer=0, on_corrupt="skip")
    batches = list(ld.batches(8))
    assert sum(len(b["__key__"]) for b in batches) == res.samples - 1 and [k for k, _ in ld.skipped] == [row["key"]]
    assert len(list(DatasetLoader(ds, shuffle_buffer=0, verify=False))) == res.samples  # unchecked reads take it as it is
    with pytest.raises(ValueError):
        DatasetLoader(ds, on_corrupt="ignore")


@pytest.mark.slow
def test_dataset_build_of_only_undecodable_clips_is_refused(store, tmp_path):
    import yaml

    from fleetcore.datasets.build import DatasetError
    from pipelines.build_dataset import run_build_dataset

    st = tmp_path / "store"
    shutil.copytree(store, st)
    cat = Catalog(str(st))
    index = cat.read("index")
    for key in index["key"].unique().to_list():  # every clip loses the start marker of one frame
        row = index.filter((index["key"] == key) & index["member"].str.ends_with(".jpg")).row(0, named=True)
        p = Path(cat.shard_path(row["shard"]))
        data = bytearray(p.read_bytes())
        data[row["data_offset"]: row["data_offset"] + 2] = b"\0\0"
        p.write_bytes(bytes(data))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "broken", "where": "true", "cameras": ["front"], "frames_per_clip": 2, "frame_rate_hz": 2.0,
                                    "resolution": [32, 24], "privacy_required": False, "val_fraction": 0.0}))
    with pytest.raises(DatasetError) as err:
        run_build_dataset(spec, store=str(st), datasets_root=tmp_path / "root", beam_args=["--runner=FnApiRunner"])
    assert err.value.code == "all_skipped"
    assert not any((tmp_path / "root" / "broken").iterdir())  # no version, no temp folder left
