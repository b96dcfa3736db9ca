"""The clip store's manifest, generations, retention and erasure, and concurrent commits, on real
curated stores (simulated fleet -> curate job) and real processes."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from fleetcore.store.catalog import Catalog
from fleetcore.store.layout import StoreLayout
from fleetcore.store.manifest import Generation, commit, read_manifest
from fleetcore.store.retention import collect, erase
from fleetcore.store.shards import StoreError, verify_store

ROOT = Path(__file__).resolve().parents[1]


def _gen(i: int, version: str = "cfg-a", vehicle: str = "veh") -> Generation:
    return Generation(vehicle_id=vehicle, drive_id=f"d{i:03d}", date="2026-11-20", config_version=version, clips=1,
                      tables=(("clips", f"catalog/clips/date=2026-11-20/{vehicle}__d{i:03d}.x.parquet"),))


def _committer(root: str, who: str, n: int, start: "mp.synchronize.Event") -> None:
    start.wait()
    for i in range(n):
        commit(StoreLayout(root), add=[_gen(i, vehicle=who)])


def test_two_processes_committing_at_once_lose_nothing(tmp_path):
    """Two processes commit 30 generations each, at the same time: every one is in the newest
    revision, revisions are consecutive, and no revision file was overwritten (each is valid JSON)."""
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_committer, args=(str(tmp_path), who, 30, start)) for who in ("a", "b")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    man = read_manifest(StoreLayout(str(tmp_path)))
    assert man.revision == 60
    assert sorted(man.drives) == sorted(f"{w}__d{i:03d}" for w in ("a", "b") for i in range(30))
    revs = sorted(int(p.stem) for p in (tmp_path / "_commits").glob("*.json"))
    assert revs == list(range(60 - len(revs) + 1, 61))  # older revisions are pruned, never skipped
    for p in (tmp_path / "_commits").glob("*.json"):
        assert json.loads(p.read_text())["revision"] == int(p.stem)
    assert json.loads((tmp_path / "clips" / "manifest.json").read_text())["revision"] == 60


def test_generations_replace_and_stay_readable_by_version(tmp_path):
    layout = StoreLayout(str(tmp_path))
    commit(layout, add=[_gen(0, "cfg-a"), _gen(1, "cfg-a")])
    commit(layout, add=[_gen(0, "cfg-b")])
    man = read_manifest(layout)
    assert [(g.drive, g.config_version) for g in man.current()] == [("veh__d000", "cfg-b"), ("veh__d001", "cfg-a")]
    assert [g.drive for g in man.generations(config_version="cfg-a")] == ["veh__d000", "veh__d001"]
    # committing the same generation again is idempotent: still two generations of d000
    commit(layout, add=[_gen(0, "cfg-b")])
    assert [g.config_version for g in read_manifest(layout).drives["veh__d000"]] == ["cfg-a", "cfg-b"]


def test_a_store_of_the_old_format_is_refused_with_a_clear_error(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "manifest.json").write_text(json.dumps({"format": "fleet-clipstore", "format_version": 1, "shards": []}))
    with pytest.raises(StoreError, match="older store format"):
        read_manifest(StoreLayout(str(tmp_path)))


# ----------------------------------------------------------------------------------------
# on curated stores
# ----------------------------------------------------------------------------------------
def _curate(landing: Path, store: Path, *, triggers: tuple[str, ...] = (), privacy: bool = True) -> dict:
    from fleetcore.clips import CurateConfig, curate_stages
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    cfg = CurateConfig(rate_hz=5.0, stages=curate_stages(labels=False, privacy=privacy), trigger_paths=triggers)
    return run_curate(str(landing), str(store), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])


NEW_TRIGGER = """name: extra_sample
version: 1
kind: random_sample
description: More seeded background clips (test trigger).
sample: {every_s: 10, duration_s: 2, seed: 5}
priority: 1
"""


@pytest.fixture(scope="module")
def small_fleet(tmp_path_factory) -> Path:
    from fleetcore.simulate import simulate_fleet

    root = tmp_path_factory.mktemp("store-fleet") / "landing"
    simulate_fleet(root, vehicles=2, drives_per_vehicle=2, cameras=2, width=320, height=180, fps=10.0, duration_s=20.0, seed=11, workers=1)
    return root


def _all_files(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_recuration_under_a_new_config_replaces_the_drives_clips(small_fleet, tmp_path):
    store = tmp_path / "store"
    first = _curate(small_fleet, store)
    v1 = first["config_version"]
    trig = tmp_path / "extra"
    trig.mkdir()
    (trig / "extra_sample.yaml").write_text(NEW_TRIGGER)
    second = _curate(small_fleet, store, triggers=(str(trig),))
    v2 = second["config_version"]
    assert v1 != v2 and second["drives_curated"] == 4
    # only the windows the store did not hold were decoded; the others were re-keyed from the stored samples
    assert 0 < second["clips_reused"] < second["clips"] and second["clips_decoded"] == second["clips"] - second["clips_reused"]
    assert second["clips_reused"] <= first["clips"] and 0 < second["frames_decoded"] < first["frames_decoded"]
    assert second["metrics"]["clips_reused"] == second["clips_reused"] and second["metrics"]["frames_decoded"] == second["frames_decoded"]
    # and the result is byte for byte what a fresh curate under the new config writes
    fresh = tmp_path / "fresh"
    ref = _curate(small_fleet, fresh, triggers=(str(trig),))
    assert ref["clips_reused"] == 0 and ref["config_version"] == v2

    def shards(root: Path, version: str) -> dict[str, str]:
        return {s["name"]: s["sha256"] for g in read_manifest(StoreLayout(str(root))).generations(config_version=version) for s in g.shards}

    assert shards(store, v2) == shards(fresh, v2)
    for table in ("clips", "index", "labels"):
        a, b = Catalog(str(store)).read(table), Catalog(str(fresh)).read(table)
        assert a.sort(a.columns).equals(b.sort(b.columns)), table
    cat = Catalog(str(store))
    clips = cat.read("clips")
    # the current generation only: one config version, no window twice
    assert clips["config_version"].unique().to_list() == [v2]
    assert clips.select("drive_id", "start_ns", "end_ns").is_duplicated().sum() == 0 and clips["clip_id"].n_unique() == clips.height
    assert clips.height == second["store_samples"]
    # the index, labels and triggers tables follow the generation too
    assert set(cat.read("index")["key"].unique().to_list()) == set(clips["member_key"].to_list())
    assert "extra_sample" in cat.read("triggers")["trigger"].unique().to_list()
    # the earlier generation is still readable by its version
    old = Catalog(str(store), config_version=v1).read("clips")
    assert old.height == first["clips"] and old["config_version"].unique().to_list() == [v1]
    # every shard of both generations verifies against the manifest copy
    assert verify_store(store / "clips") == []
    # a dataset built now has one sample per current clip: none twice, none of the earlier generation
    from pipelines.build_dataset import run_build_dataset

    spec = tmp_path / "all.yaml"
    spec.write_text("name: everything\ncameras: [front]\nframes_per_clip: 2\nframe_rate_hz: 2\nresolution: [64, 36]\nprivacy_required: false\n")
    built = run_build_dataset(str(spec), store=str(store), datasets_root=str(tmp_path / "ds"), beam_args=["--runner=FnApiRunner"])
    samples = json.loads((Path(built.path) / "manifest.json").read_text())["samples"]
    assert len(samples) == len({s["clip_id"] for s in samples}) == clips.height
    assert {s["clip_id"] for s in samples} == set(clips["clip_id"].to_list())
    # changing the privacy stage changes the stored pixels: every clip is extracted from the source again
    third = _curate(small_fleet, store, triggers=(str(trig),), privacy=False)
    assert third["clips_reused"] == 0 and third["clips_decoded"] == third["clips"] == second["clips"] and third["frames_decoded"] > 0


@pytest.mark.slow
def test_gc_keeps_exactly_what_it_should(small_fleet, tmp_path):
    store = tmp_path / "store"
    first = _curate(small_fleet, store)
    trig = tmp_path / "extra"
    trig.mkdir()
    (trig / "extra_sample.yaml").write_text(NEW_TRIGGER)
    _curate(small_fleet, store, triggers=(str(trig),))
    layout = StoreLayout(str(store))
    before_current = Catalog(str(store)).read("clips").sort("clip_id")
    old_files = {str(store / rel) for g in read_manifest(layout).generations(config_version=first["config_version"]) for rel in g.files()}
    shared = {str(store / rel) for g in read_manifest(layout).current() for rel in g.files()}
    old_only = old_files - shared
    assert old_only and all(Path(p).is_file() for p in old_only)
    # keep 2 (current + previous): nothing to collect
    assert collect(layout, keep=2).removed_generations == []
    # older than a date before both commits: nothing either
    assert collect(layout, keep=2, before=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)).removed_generations == []
    # a dry run lists the four superseded generations and removes nothing
    dry = collect(layout, keep=1, dry_run=True)
    assert len(dry.removed_generations) == 4 and all(Path(p).is_file() for p in old_only)
    res = collect(layout, keep=1)
    assert len(res.removed_generations) == 4 and res.files_removed == len(old_only)
    assert not any(Path(p).exists() for p in old_only)
    assert all(Path(p).is_file() for p in shared)  # telemetry and frames are shared with the current generation
    assert Catalog(str(store)).read("clips").sort("clip_id").equals(before_current)
    assert Catalog(str(store), config_version=first["config_version"]).files("clips") == []
    assert verify_store(store / "clips") == []
    audit = json.loads(Path(res.audit_record).read_text())
    assert audit["action"] == "gc" and len(audit["generations"]) == 4


@pytest.mark.slow
def test_erase_leaves_no_byte_of_the_drive(small_fleet, tmp_path):
    from fleetcore.datasets.manifest import datasets_holding
    from pipelines.build_dataset import run_build_dataset

    store = tmp_path / "store"
    _curate(small_fleet, store)
    cat = Catalog(str(store))
    clips = cat.read("clips")
    victim = clips.row(0, named=True)
    vehicle, drive = victim["vehicle_id"], victim["drive_id"]
    gone = clips.filter((pl.col("vehicle_id") == vehicle) & (pl.col("drive_id") == drive))
    # bytes of the drive's samples (JPEG frames and telemetry) to look for afterwards
    idx = cat.read("index").filter(pl.col("key").is_in(gone["member_key"].to_list()))
    probes = [cat.read_member(r["shard"], r["data_offset"], r["size"]) for r in idx.filter(pl.col("member").str.ends_with(".jpg")).head(5).iter_rows(named=True)]
    assert probes and all(len(p) > 1000 for p in probes)
    spec = tmp_path / "all.yaml"
    spec.write_text("name: everything\ncameras: [front]\nframes_per_clip: 2\nframe_rate_hz: 2\nresolution: [64, 36]\nprivacy_required: false\n")
    ds_root = tmp_path / "datasets"
    built = run_build_dataset(str(spec), store=str(store), datasets_root=str(ds_root), beam_args=["--runner=FnApiRunner"])
    held = datasets_holding(ds_root, vehicle_id=vehicle, drive_id=drive)
    assert [(d["name"], d["version"]) for d in held] == [("everything", built.version)] and held[0]["samples_erased"] == gone.height

    res = erase(StoreLayout(str(store)), vehicle_id=vehicle, drive_id=drive, datasets=held)
    assert res.drives == [f"{vehicle}__{drive}"] and res.clips == gone.height and res.files_removed > 0
    after = Catalog(str(store))
    assert after.read("clips").filter(pl.col("drive_id") == drive).height == 0
    assert after.read("clips").height == clips.height - gone.height
    assert after.read("drives").filter(pl.col("drive_id") == drive).height == 0
    audit = Path(res.audit_record)
    for p in _all_files(store):
        if p.parent.name == "audit":
            continue
        data = p.read_bytes()
        assert drive.encode() not in data, f"{p} still names the erased drive"
        assert not any(probe in data for probe in probes), f"{p} still holds the erased drive's frames"
    doc = json.loads(audit.read_text())
    assert doc["action"] == "erase" and doc["drive_id"] == drive and doc["datasets_holding_data"][0]["version"] == built.version
    assert verify_store(store / "clips") == []
    # the other drives are untouched and still build
    again = run_build_dataset(str(spec), store=str(store), datasets_root=str(ds_root), beam_args=["--runner=FnApiRunner"])
    assert again.version != built.version and again.samples == built.samples - gone.height


@pytest.mark.slow
def test_erase_cli_rebuilds_the_datasets_that_held_the_vehicle(small_fleet, tmp_path):
    from click.testing import CliRunner

    from fleet_cli.main import cli
    from pipelines.build_dataset import run_build_dataset

    store = tmp_path / "store"
    _curate(small_fleet, store)
    spec = tmp_path / "all.yaml"
    spec.write_text("name: everything\ncameras: [front]\nframes_per_clip: 2\nframe_rate_hz: 2\nresolution: [64, 36]\nprivacy_required: false\n")
    ds_root = tmp_path / "datasets"
    built = run_build_dataset(str(spec), store=str(store), datasets_root=str(ds_root), beam_args=["--runner=FnApiRunner"])
    r = CliRunner().invoke(cli, ["erase", "--store", str(store), "--vehicle", "veh-000", "--datasets-root", str(ds_root), "--rebuild-datasets", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["vehicle_id"] == "veh-000" and len(out["drives"]) == 2
    assert out["rebuilt"][0]["old"] == built.version and not Path(built.path).exists()
    new = json.loads((ds_root / "everything" / out["rebuilt"][0]["new"] / "manifest.json").read_text())
    assert new["samples"] and {s["vehicle_id"] for s in new["samples"]} == {"veh-001"}
    r = CliRunner().invoke(cli, ["store", "info", str(store), "--json"])
    assert r.exit_code == 0 and [d["drive"].split("__")[0] for d in json.loads(r.output)["drives"]] == ["veh-001", "veh-001"]


@pytest.mark.slow
def test_two_curate_processes_on_one_store(small_fleet, tmp_path):
    """Two curate jobs (one per vehicle) commit to one store at the same time: the manifest lists
    every shard, the catalog has one row per stored sample, no clip id repeats."""
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pipelines.curate", "--input", str(small_fleet), "--output", str(store), "--no-labels", "--rate-hz", "5",
           "--runner=FnApiRunner"]
    procs = [subprocess.Popen([*cmd, "--vehicle", v], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for v in ("veh-000", "veh-001")]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()[-3000:]
    man = read_manifest(StoreLayout(str(store)))
    assert len(man.drives) == 4
    on_disk = sorted(str(p.relative_to(store / "clips")) for p in (store / "clips").rglob("*.tar"))
    doc = json.loads((store / "clips" / "manifest.json").read_text())
    assert sorted(s["name"] for s in doc["shards"]) == on_disk
    clips = Catalog(str(store)).read("clips")
    assert clips.height == doc["n_samples"] == sum(s["samples"] for s in doc["shards"]) > 0
    assert clips["clip_id"].n_unique() == clips.height
    assert verify_store(store / "clips") == []


@pytest.mark.slow
def test_relabel_rewrites_labels_from_the_stored_frames_without_decoding(small_fleet, tmp_path):
    from click.testing import CliRunner

    from fleet_cli.main import cli
    from fleetcore.clips import CurateConfig, curate_stages
    from fleetcore.stages.options import LabelsOptions
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    store = tmp_path / "store"
    base = CurateConfig(rate_hz=5.0, stages=curate_stages(labels=True, privacy=False))
    first = run_curate(str(small_fleet), str(store), base, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    before = Catalog(str(store))
    old_labels = before.read("labels")
    assert {"vision", "telemetry", "phash"} <= set(old_labels["labeller"].unique().to_list())
    old_idx = before.read("index")
    opts = tmp_path / "labels.yaml"
    opts.write_text("builtins: [telemetry, phash]\n")
    r = CliRunner().invoke(cli, ["relabel", "--store", str(store), "--rate-hz", "5", "--no-privacy", "--labels-config", str(opts), "--json",
                                 "--runner=FnApiRunner"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    new_version = CurateConfig(rate_hz=5.0, stages=curate_stages(labels=True, privacy=False), labels=LabelsOptions.from_file(opts)).version()
    assert s["drives_relabelled"] == 4 and s["clips"] == first["clips"] and s["frames_decoded"] == 0 and s["skipped"] == []
    assert s["config_version"] == new_version != first["config_version"]
    after = Catalog(str(store))
    clips = after.read("clips")
    assert clips.height == first["clips"] and clips["config_version"].unique().to_list() == [new_version]
    labels = after.read("labels")
    assert set(labels["labeller"].unique().to_list()) == {"telemetry", "phash"}
    # the telemetry labels are the same values as before (they do not look at pixels)
    key = ["label", "value"]
    old_tel = old_labels.filter(pl.col("labeller") == "telemetry").select(key).sort(key)
    assert labels.filter(pl.col("labeller") == "telemetry").select(key).sort(key).equals(old_tel)
    # every frame member is byte for byte the stored one (renamed to the new clip id); the JSON holds the new labels
    def frames(cat: Catalog, idx: pl.DataFrame) -> list[bytes]:
        jpg = idx.filter(pl.col("member").str.ends_with(".jpg"))
        return sorted(cat.read_member(r["shard"], r["data_offset"], r["size"]) for r in jpg.iter_rows(named=True))

    assert frames(after, after.read("index")) == frames(before, old_idx)
    sample_json = json.loads(after.read_member(*after.read("index").filter(pl.col("member").str.ends_with(".json")).select("shard", "data_offset", "size").row(0)))
    assert set(sample_json["record"]["labels"]) == {"telemetry", "phash"} and sample_json["record"]["config_version"] == new_version
    assert verify_store(store / "clips") == []
    # the labels config in place: curate is a no-op now, and a relabel again does nothing
    again = CliRunner().invoke(cli, ["relabel", "--store", str(store), "--rate-hz", "5", "--no-privacy", "--labels-config", str(opts), "--json",
                                     "--runner=FnApiRunner"])
    assert again.exit_code == 0 and json.loads(again.output)["drives_relabelled"] == 0
    # other frames (privacy on): the drives are skipped with the reason
    other = CliRunner().invoke(cli, ["relabel", "--store", str(store), "--rate-hz", "5", "--json", "--runner=FnApiRunner"])
    assert other.exit_code == 0 and len(json.loads(other.output)["skipped"]) == 4
    assert "re-curate" in json.loads(other.output)["skipped"][0]["reason"]


@pytest.mark.slow
def test_near_duplicates_across_drives_and_runs(small_fleet, tmp_path):
    """The same footage landed again as another drive (another run): the catalog's per-drive mark
    does not see it, the store-wide ``near_duplicates`` table and dataset builds do."""
    import shutil

    from fleetcore.clips import CurateConfig, curate_stages
    from fleetcore.query.mining import MiningSession
    from pipelines.build_dataset import run_build_dataset
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    landing = tmp_path / "landing"
    src = sorted((small_fleet / "veh-000").iterdir())[0]
    shutil.copytree(src, landing / "veh-000" / src.name)
    store = tmp_path / "store"
    trig = tmp_path / "triggers"
    trig.mkdir()  # one window over the whole drive (it merges every other trigger's), the same in both
    (trig / "always.yaml").write_text('name: always\nversion: 1\ndescription: Always (test).\nwhere: "speed_mps >= 0"\n'
                                      'min_duration_s: 1.0\npre_roll_s: 0.0\npost_roll_s: 0.0\ncooldown_s: 0.0\npriority: 1\n')
    cfg = CurateConfig(rate_hz=5.0, stages=curate_stages(labels=True, privacy=False), trigger_paths=(str(trig),))
    first = run_curate(str(landing), str(store), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    # the same drive again, re-uploaded under another drive id, in a later run
    again = landing / "veh-000" / f"{src.name}-again"
    shutil.copytree(src, again)
    man = json.loads((again / "manifest.json").read_text())
    man["drive_id"] = again.name
    (again / "manifest.json").write_text(json.dumps(man))
    second = run_curate(str(landing), str(store), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    assert first["clips"] > 0 and second["drives_curated"] == 1 and second["clips"] == first["clips"]
    clips = Catalog(str(store)).read("clips")
    assert clips.height == 2 * first["clips"] and clips["phash"].null_count() == 0
    assert clips.filter(pl.col("drive_id") == again.name)["near_duplicate_of"].null_count() == first["clips"]  # per drive: unseen
    marks = MiningSession.open(str(store)).query(
        "SELECT c.clip_id, c.drive_id, d.near_duplicate_of FROM clips c JOIN near_duplicates d ON c.clip_id = d.clip_id ORDER BY c.clip_id")
    dup = marks.filter(pl.col("near_duplicate_of").is_not_null())
    assert dup.height == first["clips"]  # one of each pair of identical windows
    by_id = dict(zip(clips["clip_id"], clips["drive_id"]))
    assert all(by_id[o] != d for o, d in zip(dup["near_duplicate_of"], dup["drive_id"]))
    spec = tmp_path / "dedup.yaml"
    spec.write_text("name: dedup\ncameras: [front]\nframes_per_clip: 2\nframe_rate_hz: 2\nresolution: [64, 36]\n"
                    "privacy_required: false\ndrop_near_duplicates: true\n")
    built = run_build_dataset(str(spec), store=str(store), datasets_root=str(tmp_path / "ds"), beam_args=["--runner=FnApiRunner"])
    assert built.samples == first["clips"]
