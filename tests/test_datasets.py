"""Dataset specs, selection, the build job (Beam, FnApiRunner), manifests, lineage, diff and verify —
on a real clip store made by the simulator and the curate job."""

from __future__ import annotations

import re
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from fleetcore.store.catalog import Catalog
from fleetcore.datasets import DatasetSpec, load_spec, parse_spec
from fleetcore.datasets.build import INDEX_NAME, MANIFEST_NAME, DatasetError
from fleetcore.datasets.manifest import diff_datasets, read_manifest, resolve_dataset, verify_dataset
from fleetcore.datasets.selection import _digests, select
from fleetcore.errors import ConfigError
from schemas import DATASET_MANIFEST

REPO = Path(__file__).resolve().parents[1]

BASE_SPEC = {
    "name": "unit",
    "cameras": ["front", "left"],
    "frames_per_clip": 4,
    "frame_rate_hz": 2.0,
    "resolution": [96, 64],
    "format": "webdataset",
    "shard_bytes": 60000,
    "val_fraction": 0.5,
    "seed": 0,
}


# ----------------------------------------------------------------------------------------
# specs (fast)
# ----------------------------------------------------------------------------------------
def test_shipped_specs_parse():
    files = sorted((REPO / "datasets").glob("*.yaml"))
    assert files
    for f in files:
        spec = load_spec(f)
        assert isinstance(spec, DatasetSpec) and spec.name and spec.cameras


def test_spec_defaults_and_identity():
    spec = parse_spec(dict(BASE_SPEC, store="/x"))
    assert spec.privacy_required is True and spec.drop_near_duplicates is False
    assert spec.resolution == (96, 64)
    # the store is not part of the identity: the same spec over a moved store is the same dataset
    assert parse_spec(dict(BASE_SPEC, store="/y")).to_json() == spec.to_json()
    assert parse_spec(dict(BASE_SPEC, seed=1)).to_json() != spec.to_json()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "has.dot"}, "name"),
        ({"format": "parquet"}, "format"),
        ({"resolution": [96]}, "resolution"),
        ({"resolution": [96, "64"]}, "resolution"),
        ({"cameras": []}, "cameras"),
        ({"cameras": ["Front"]}, "cameras[0]"),
        ({"frames_per_clip": 0}, "frames_per_clip"),
        ({"frame_rate_hz": -1}, "frame_rate_hz"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"class_weights": {"hard_brake": -1}}, "class_weights.hard_brake"),
        ({"where": "x = 1", "sql": "SELECT * FROM clips"}, "sql"),
        ({"sql": "DELETE FROM clips"}, "sql"),
        ({"privacy_required": "yes"}, "privacy_required"),
        ({"shard_bytes": 10}, "shard_bytes"),
        ({"bogus": 1}, "bogus"),
        ({"jpeg_quality": 101}, "jpeg_quality"),
    ],
)
def test_bad_spec_names_the_field(tmp_path, change, field):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(dict(BASE_SPEC, **change)))
    with pytest.raises(ConfigError) as ei:
        load_spec(f)
    assert ei.value.path == str(f)
    assert ei.value.field == field


def test_bad_yaml_and_missing_fields(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_spec(f)
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_spec(f)
    missing = dict(BASE_SPEC)
    del missing["frames_per_clip"]
    with pytest.raises(ConfigError) as ei:
        parse_spec(missing, path="s.yaml")
    assert ei.value.field == "frames_per_clip"


# ----------------------------------------------------------------------------------------
# a real store (slow)
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from fleetcore.clips import CurateConfig
    from fleetcore.simulate import simulate_fleet
    from pipelines.curate import run_curate

    root = tmp_path_factory.mktemp("ds_landing")
    st = tmp_path_factory.mktemp("ds_store") / "store"
    simulate_fleet(root, vehicles=2, drives_per_vehicle=1, cameras=2, width=320, height=180, fps=10.0, duration_s=30.0, seed=7)
    run_curate(str(root), str(st), CurateConfig(stages=("privacy",)), beam_args=["--runner=FnApiRunner"])
    assert Catalog(str(st)).read("clips").height >= 3
    return st


def _spec(tmp: Path, **kw) -> Path:
    f = tmp / f"spec-{hashlib.sha256(json.dumps(kw, sort_keys=True).encode()).hexdigest()[:8]}.yaml"
    f.write_text(yaml.safe_dump(dict(BASE_SPEC, **kw)))
    return f


def _build(spec: Path, store: Path, root: Path):
    from pipelines.build_dataset import run_build_dataset

    return run_build_dataset(spec, store=str(store), datasets_root=root, beam_args=["--runner=FnApiRunner"])


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):
    """The same webdataset spec built into two roots, and an Arrow build."""
    tmp = tmp_path_factory.mktemp("ds_specs")
    wds_spec = _spec(tmp, class_weights={"hard_brake": 2.0})
    r1 = _build(wds_spec, store, tmp / "root1")
    r2 = _build(wds_spec, store, tmp / "root2")
    arrow = _build(_spec(tmp, format="arrow", name="unit_arrow"), store, tmp / "root1")
    return {"tmp": tmp, "spec": wds_spec, "r1": r1, "r2": r2, "arrow": arrow}


@pytest.mark.slow
def test_build_is_deterministic_and_immutable(built, store):
    r1, r2 = built["r1"], built["r2"]
    assert r1.built and r2.built and r1.version == r2.version and r1.version.startswith("v-")
    p1, p2 = Path(r1.path), Path(r2.path)
    files1 = sorted(f.name for f in p1.iterdir())
    assert files1 == sorted(f.name for f in p2.iterdir())
    assert MANIFEST_NAME in files1 and INDEX_NAME in files1 and any(f.endswith(".tar") for f in files1)
    for name in files1:
        assert (p1 / name).read_bytes() == (p2 / name).read_bytes(), name
    # no temp folders left behind
    assert [d.name for d in p1.parent.iterdir()] == [r1.version]
    # re-building the same spec over the same catalog is a no-op: nothing is rewritten
    stamps = {f.name: f.stat().st_mtime_ns for f in p1.iterdir()}
    again = _build(built["spec"], store, Path(r1.path).parents[1])
    assert not again.built and again.version == r1.version and again.path == r1.path
    assert {f.name: f.stat().st_mtime_ns for f in p1.iterdir()} == stamps
    # the manifest conforms to the contract
    doc = json.loads((p1 / MANIFEST_NAME).read_text())
    DATASET_MANIFEST.validate(DATASET_MANIFEST.from_pylist([doc]))
    assert doc["catalog_snapshot"] == Catalog(str(store)).snapshot_id()
    assert doc["code_version"].startswith("0.")
    assert json.loads(doc["spec"])["frames_per_clip"] == 4
    # the store was curated with the privacy stage, recorded per clip: the dataset says privacy is on
    clips = Catalog(str(store)).read("clips")
    if "privacy" in clips.columns:
        assert doc["privacy"] is bool(clips["privacy"].all())
    for s in doc["shards"]:
        assert hashlib.sha256((p1 / s["name"]).read_bytes()).hexdigest() == s["sha256"]
        assert (p1 / s["name"]).stat().st_size == s["bytes"]


@pytest.mark.slow
def test_multiprocess_runner_gives_the_same_bytes(built, store):
    from pipelines.build_dataset import run_build_dataset

    tmp = built["tmp"]
    res = run_build_dataset(built["spec"], store=str(store), datasets_root=tmp / "root_mp",
                            beam_args=["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert res.built and res.version == built["r1"].version
    for f in Path(built["r1"].path).iterdir():
        assert (Path(res.path) / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.slow
def test_dask_runner_gives_the_same_bytes(built, store):
    from distributed import Client, LocalCluster

    from pipelines.build_dataset import run_build_dataset

    tmp = built["tmp"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster):
        res = run_build_dataset(built["spec"], store=str(store), datasets_root=tmp / "root_dask", beam_args=[
            "--runner=apache_beam.runners.dask.dask_runner.DaskRunner", f"--dask_client_address={cluster.scheduler_address}", "--dask_npartitions=4"])
    assert res.built and res.version == built["r1"].version
    for f in Path(built["r1"].path).iterdir():
        assert (Path(res.path) / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.slow
def test_different_spec_is_a_new_version_and_diff(built, store):
    tmp = built["tmp"]
    clips = Catalog(str(store)).read("clips")
    drop = clips["primary_trigger"][0]
    other = _build(_spec(tmp, class_weights={"hard_brake": 2.0}, where=f"primary_trigger <> '{drop}'"), store, tmp / "root1")
    assert other.built and other.version != built["r1"].version
    assert sorted(d.name for d in Path(other.path).parent.iterdir()) == sorted([other.version, built["r1"].version])
    d = diff_datasets(read_manifest(built["r1"].path), read_manifest(other.path))
    removed = sorted(clips.filter(pl.col("primary_trigger") == drop)["clip_id"].to_list())
    assert d["removed"] == removed and d["added"] == [] and d["n_removed"] == len(removed)
    # CLI: diff by name@version, list
    from fleet_cli.datasets import COMMANDS

    cmds = {c.name: c for c in COMMANDS}
    res = CliRunner().invoke(cmds["datasets"], ["diff", f"unit@{built['r1'].version}", f"unit@{other.version}", "--root", str(tmp / "root1"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["removed"] == removed
    res = CliRunner().invoke(cmds["datasets"], ["list", "--root", str(tmp / "root1")])
    assert res.exit_code == 0 and other.version in res.output and built["r1"].version in res.output


@pytest.mark.slow
def test_lineage_back_to_source_digests_and_trigger(built, store):
    import webdataset as wds

    doc = read_manifest(built["r1"].path)
    clips = {r["clip_id"]: r for r in Catalog(str(store)).read("clips").iter_rows(named=True)}
    keys_in_shards = {k: s["name"] for s in doc["shards"] for k in s["keys"]}
    assert len(doc["samples"]) == len(keys_in_shards) == built["r1"].samples
    copies = [s for s in doc["samples"] if s["copy"] > 0]
    assert all(s["trigger"] == "hard_brake" and s["key"] == f"{s['clip_id']}_r1" for s in copies)
    for s in doc["samples"]:
        c = clips[s["clip_id"]]
        assert keys_in_shards[s["key"]] == s["shard"]
        assert s["trigger"] == c["primary_trigger"]
        assert (s["drive_id"], s["vehicle_id"]) == (c["drive_id"], c["vehicle_id"])
        assert s["source_digests"] == _digests(c["source_digests"])
        assert s["source_digests"]  # real sha256 of the landing files
    # the sample JSON inside the shard carries the same lineage
    urls = [str(Path(built["r1"].path) / s["name"]) for s in doc["shards"]]
    seen = 0
    for smp in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        rec = json.loads(smp["json"])["record"]
        lin = next(s for s in doc["samples"] if s["key"] == smp["__key__"])
        assert rec["clip_id"] == lin["clip_id"] and rec["trigger"] == lin["trigger"] and rec["source_digests"] == lin["source_digests"]
        assert rec["split"] == lin["split"]
        seen += 1
    assert seen == len(doc["samples"])


@pytest.mark.slow
def test_split_never_shares_a_drive(built, store):
    cat = Catalog(str(store))
    both = None
    for seed in range(30):
        sel = select(cat, parse_spec(dict(BASE_SPEC, seed=seed, val_fraction=0.5))).samples
        tr = set(sel.filter(pl.col("split") == "train")["drive_id"])
        va = set(sel.filter(pl.col("split") == "val")["drive_id"])
        assert not tr & va
        if tr and va and both is None:
            both = seed
    assert both is not None
    doc = read_manifest(built["r1"].path)
    by_split: dict[str, set[str]] = {}
    for s in doc["samples"]:
        by_split.setdefault(s["split"], set()).add(s["drive_id"])
    assert not by_split.get("train", set()) & by_split.get("val", set())
    for sh in doc["shards"]:
        assert sh["name"].startswith(sh["split"] + "-")


@pytest.mark.slow
def test_selection_caps_and_weights_are_deterministic(store):
    cat = Catalog(str(store))
    spec = parse_spec(dict(BASE_SPEC, cap_per_vehicle=1, seed=3))
    a = select(cat, spec).samples
    assert a.equals(select(cat, spec).samples)
    assert a.group_by("vehicle_id").len()["len"].max() == 1
    zero = select(cat, parse_spec(dict(BASE_SPEC, class_weights={t: 0.0 for t in cat.read("clips")["primary_trigger"].unique()}))).samples
    assert zero.height == 0
    capped = select(cat, parse_spec(dict(BASE_SPEC, cap_per_trigger=1))).samples
    assert capped.group_by("trigger").len()["len"].max() == 1
    with pytest.raises(ConfigError) as ei:
        select(cat, parse_spec(dict(BASE_SPEC, where="no_such_column = 1")))
    assert ei.value.field == "where"


@pytest.mark.slow
def test_labels_privacy_and_near_duplicates(store, tmp_path, store_labels):
    st = tmp_path / "store"
    shutil.copytree(store, st)
    clips = Catalog(str(st)).read("clips")
    ids = sorted(clips["clip_id"].to_list())
    rows = []
    for i, cid in enumerate(ids):
        rows.append({"clip_id": cid, "labeller": "weather", "labeller_version": "3", "label": "weather", "value": "rain" if i % 2 == 0 else "clear", "score": None})
        rows.append({"clip_id": cid, "labeller": "weather", "labeller_version": "3", "label": "rain_mm", "value": None, "score": -20.0 + i})
    rows.append({"clip_id": ids[0], "labeller": "privacy", "labeller_version": "1", "label": "privacy_enabled", "value": "false", "score": 0.0})
    rows.append({"clip_id": ids[2], "labeller": "phash", "labeller_version": "1", "label": "near_duplicate_of", "value": ids[1], "score": None})
    store_labels(st, rows, replace=True)  # replace whatever labels the curate run wrote
    cat = Catalog(str(st))
    # the catalog itself records privacy off for one clip (a store curated without the privacy stage)
    for f in cat.files("clips"):
        t = pq.read_table(f)
        if "privacy" in t.column_names:
            priv = [cid != ids[3] for cid in t.column("clip_id").to_pylist()]
            t = t.set_column(t.schema.get_field_index("privacy"), t.schema.field("privacy"), pa.array(priv, pa.bool_()))
            pq.write_table(t, f)

    rain = select(cat, parse_spec(dict(BASE_SPEC, where="weather = 'rain'", privacy_required=False))).samples
    assert set(rain["clip_id"]) == {c for i, c in enumerate(ids) if i % 2 == 0}
    numeric = select(cat, parse_spec(dict(BASE_SPEC, where="rain_mm < -19.5", privacy_required=False))).samples
    assert set(numeric["clip_id"]) == {ids[0]}
    sql = select(cat, parse_spec(dict(BASE_SPEC, sql="SELECT clip_id FROM clips WHERE weather = 'clear'", privacy_required=False))).samples
    assert set(sql["clip_id"]) == {c for i, c in enumerate(ids) if i % 2 == 1}
    # privacy recorded off (label or catalog column) is refused by default
    sel = select(cat, parse_spec(dict(BASE_SPEC)))
    kept = set(sel.samples["clip_id"])
    assert ids[0] not in kept and sel.counts["refused_privacy_off"] == (2 if "privacy" in clips.columns else 1)
    assert ids[1] in kept
    if "privacy" in clips.columns:
        assert ids[3] not in kept
    assert sel.labellers["weather"] == "3"
    assert ids[0] in set(select(cat, parse_spec(dict(BASE_SPEC, privacy_required=False))).samples["clip_id"])
    # near-duplicates (label near_duplicate_of, or the catalog column)
    dedup = select(cat, parse_spec(dict(BASE_SPEC, drop_near_duplicates=True, privacy_required=False)))
    assert ids[2] not in set(dedup.samples["clip_id"]) and dedup.counts["dropped_near_duplicates"] >= 1
    assert ids[2] in set(select(cat, parse_spec(dict(BASE_SPEC, privacy_required=False))).samples["clip_id"])
    # labels and labeller versions reach the manifest and the samples
    res = _build(_spec(tmp_path, where="weather = 'rain'", privacy_required=False), st, tmp_path / "root")
    doc = read_manifest(res.path)
    assert doc["labellers"]["weather"] == "3" and doc["privacy"] is False  # ids[0] is in it, recorded off
    from fleetcore.datasets.loader import DatasetLoader

    n = 0
    for s in DatasetLoader(res.path, shuffle_buffer=0):
        assert s["record"]["labels"]["weather"]["values"]["weather"] == "rain"
        n += 1
    assert n == len(doc["samples"]) > 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
def test_webdataset_and_torch_read_the_shards(built):
    import webdataset as wds

    path = Path(built["r1"].path)
    doc = read_manifest(path)
    urls = [str(path / s["name"]) for s in doc["shards"]]
    n = 0
    for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("rgb8"):
        assert s["front.000.jpg"].shape == (64, 96, 3) and s["front.000.jpg"].dtype == np.uint8
        assert s["telemetry.npy"].shape == (4, len(doc["telemetry_columns"]))
        n += 1
    assert n == len(doc["samples"])
    torch = pytest.importorskip("torch")
    from fleetcore.datasets.loader import torch_dataset

    dl = torch.utils.data.DataLoader(torch_dataset(path, batch_size=2, shuffle_buffer=0), batch_size=None, num_workers=0)
    got = [b for b in dl]
    assert sum(b["frames"].shape[0] for b in got) == len(doc["samples"])
    assert got[0]["frames"].dtype == torch.uint8 and tuple(got[0]["frames"].shape[1:]) == (2, 4, 64, 96, 3)
    # the webdataset pipeline in a plain DataLoader too
    wd = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("rgb8").to_tuple("front.000.jpg", "telemetry.npy")
    batches = list(torch.utils.data.DataLoader(wd, batch_size=2))
    assert sum(b[0].shape[0] for b in batches) == len(doc["samples"])


@pytest.mark.slow
def test_arrow_output_reads_everywhere(built):
    path = Path(built["arrow"].path)
    doc = read_manifest(path)
    assert doc["format"] == "arrow"
    shard = path / doc["shards"][0]["name"]
    with pa.memory_map(str(shard), "r") as mm:
        t = pa.ipc.open_file(mm).read_all()
        assert t.schema.field("frames").type.shape == [2, 4, 64, 96, 3]
        frames = t.column("frames").combine_chunks().to_numpy_ndarray()
        assert frames.shape == (t.num_rows, 2, 4, 64, 96, 3) and frames.dtype == np.uint8
        assert t.column("key").to_pylist() == doc["shards"][0]["keys"]
    df = pl.read_ipc(shard)
    assert df.height == doc["shards"][0]["samples"] and "telemetry" in df.columns
    assert df.select("clip_id").to_series().to_list() == [s["clip_id"] for s in doc["samples"] if s["shard"] == shard.name]
    from fleetcore.datasets.loader import DatasetLoader

    loader = DatasetLoader(path, shuffle_buffer=0)
    size = shard.stat().st_size
    for s in loader:
        arr = s["frames"]
        assert arr.shape == (2, 4, 64, 96, 3)
        assert not arr.flags.owndata and arr.base is not None
        assert not arr.flags.writeable  # a read-only view of the mapped file
    # the view's memory lies inside the mapped shard file
    first = DatasetLoader(path, shuffle_buffer=0, shuffle_shards=False)
    smp = first.read(0)
    sh = first._shard(0)
    sh.mmap.seek(0)
    whole = sh.mmap.read_buffer(size)
    assert whole.address <= smp["frames"].ctypes.data < whole.address + size


@pytest.mark.slow
def test_verify_catches_flipped_byte_and_truncation(built, tmp_path):
    from fleet_cli.datasets import COMMANDS

    verify_cmd = {c.name: c for c in COMMANDS}["verify"]
    src = Path(built["r1"].path)
    assert verify_dataset(src) == []
    assert CliRunner().invoke(verify_cmd, [str(src)]).exit_code == 0
    # flip one byte inside a JPEG member's data
    ds = tmp_path / "flip"
    shutil.copytree(src, ds)
    doc = read_manifest(ds)
    shard = doc["shards"][0]["name"]
    with pa.memory_map(str(ds / INDEX_NAME), "r") as mm:
        idx = pa.ipc.open_file(mm).read_all().to_pylist()
    jpg = next(r for r in idx if r["shard"] == shard and r["member"].endswith(".jpg"))
    data = bytearray((ds / shard).read_bytes())
    data[jpg["data_offset"] + jpg["size"] // 2] ^= 0xFF
    (ds / shard).write_bytes(bytes(data))
    problems = verify_dataset(ds)
    assert problems and problems[0].shard == shard and problems[0].member == jpg["member"]
    res = CliRunner().invoke(verify_cmd, [str(ds)])
    assert res.exit_code != 0 and shard in res.output and jpg["member"] in res.output
    # flip a byte in a member's tar header (its size field): named too
    ds3 = tmp_path / "header"
    shutil.copytree(src, ds3)
    other = next(r for r in idx if r["shard"] == shard and r["member"].endswith(".npy"))
    data = bytearray((ds3 / shard).read_bytes())
    data[other["data_offset"] - 512 + 124 + 3] ^= 0x01
    (ds3 / shard).write_bytes(bytes(data))
    problems = verify_dataset(ds3)
    assert problems and problems[0].shard == shard and problems[0].member == other["member"]
    # truncate the last shard in the middle of a member
    ds2 = tmp_path / "trunc"
    shutil.copytree(src, ds2)
    last = doc["shards"][-1]["name"]
    rows = [r for r in idx if r["shard"] == last]
    cut = rows[-2]
    with open(ds2 / last, "r+b") as f:
        f.truncate(cut["data_offset"] + 10)
    problems = verify_dataset(ds2)
    assert problems and problems[0].shard == last and problems[0].member == cut["member"]
    assert {p.code for p in problems} >= {"size_mismatch", "sha256_mismatch"}
    res = CliRunner().invoke(verify_cmd, [str(ds2)])
    assert res.exit_code != 0 and last in res.output and cut["member"] in res.output


@pytest.mark.slow
def test_verify_arrow_flip_and_truncation(built, tmp_path):
    src = Path(built["arrow"].path)
    assert verify_dataset(src) == []
    doc = read_manifest(src)
    with pa.memory_map(str(src / INDEX_NAME), "r") as mm:
        idx = pa.ipc.open_file(mm).read_all().to_pylist()
    ds = tmp_path / "flip"
    shutil.copytree(src, ds)
    row = idx[1]
    data = bytearray((ds / row["shard"]).read_bytes())
    data[row["data_offset"] + 100] ^= 0x01
    (ds / row["shard"]).write_bytes(bytes(data))
    problems = verify_dataset(ds)
    assert problems[0].shard == row["shard"] and problems[0].member == f"{row['key']}/frames"
    ds2 = tmp_path / "trunc"
    shutil.copytree(src, ds2)
    name = doc["shards"][0]["name"]
    last = [r for r in idx if r["shard"] == name][-1]
    with open(ds2 / name, "r+b") as f:
        f.truncate(last["data_offset"] + 5)
    problems = verify_dataset(ds2)
    assert problems[0].shard == name and problems[0].member == f"{last['key']}/frames"


@pytest.mark.slow
def test_cli_build_and_errors(store, tmp_path):
    from fleet_cli.datasets import COMMANDS

    cmds = {c.name: c for c in COMMANDS}
    spec = _spec(tmp_path, name="cli_ds", frames_per_clip=2)
    res = CliRunner().invoke(cmds["datasets"], ["build", str(spec), "--store", str(store), "--root", str(tmp_path / "root"), "--json", "--runner=FnApiRunner"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["built"] and out["samples"] > 0
    res = CliRunner().invoke(cmds["datasets"], ["build", str(spec), "--store", str(store), "--root", str(tmp_path / "root")])
    assert res.exit_code == 0 and "no-op" in res.output
    assert resolve_dataset("cli_ds", root=tmp_path / "root") == Path(out["path"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dict(BASE_SPEC, format="zip")))
    res = CliRunner().invoke(cmds["datasets"], ["build", str(bad), "--store", str(store), "--root", str(tmp_path / "root")])
    assert res.exit_code != 0 and "format" in res.output
    empty = _spec(tmp_path, name="empty", where="duration_s < 0")
    with pytest.raises(DatasetError, match="empty"):
        _build(empty, store, tmp_path / "root")
    res = CliRunner().invoke(cmds["verify"], ["nope@v-1", "--root", str(tmp_path / "root")])
    assert res.exit_code != 0


def test_unsafe_shard_names_in_manifest_rejected(tmp_path):
    doc = {"name": "x", "version": "v", "format": "webdataset", "spec": "{}", "catalog_snapshot": "s", "code_version": "c",
           "labellers": {}, "privacy": False, "shards": [{"name": "../evil.tar", "samples": 0, "bytes": 0, "sha256": "0"}], "samples": []}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="plain file name"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("extra, problem", [
    ("frames_per_clip: 100000000\nframe_rate_hz: 5.0\n", "frames at 5 Hz span"),
    ("frames_per_clip: 4000\nframe_rate_hz: 5.0\n", "800 s"),
    ("frames_per_clip: 5000\nframe_rate_hz: 1000\nresolution: [4096, 4096]\n", "GiB of pixels"),
])
def test_huge_samples_are_refused_when_the_spec_is_read(tmp_path, extra, problem):
    """frames_per_clip: 100000000 once ended in a numpy memory error inside Beam; now a one-line error."""
    from fleetcore.datasets.spec import load_spec
    from fleetcore.errors import ConfigError

    base = "name: big\nstore: s\nwhere: \"true\"\ncameras: [front]\nresolution: [224, 128]\n"
    lines = {k: v for k, v in (ln.split(": ", 1) for ln in (base + extra).strip().splitlines())}
    p = tmp_path / "big.yaml"
    p.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    with pytest.raises(ConfigError, match=f"^{re.escape(str(p))}: frames_per_clip: .*{re.escape(problem)}") as err:
        load_spec(p)
    assert "\n" not in str(err.value)
