"""Store faults: damage to a curated clip store and to a built dataset, and landing drives whose
sample keys would collide. Each must be reported (``fleet store verify``), refused with a typed error
or skipped with a record, never lost and never a traceback.

One small store (three 3 s drives, two of them the same drive id with the same content under two
vehicles) is curated once; each fault damages a copy of it (or of a dataset built from it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner

from conftest import build_drive, encode_testsrc
from fleetcore.clips import CurateConfig
from fleetcore.store.catalog import Catalog
from fleetcore.store.layout import StoreLayout
from fleetcore.store.manifest import read_manifest
from fleetcore.store.verify import verify_clip_store
from pipelines.curate import DEFAULT_RUNNER, run_curate

pytestmark = pytest.mark.slow

SPEC = {"name": "faults", "where": "true", "cameras": ["front", "left"], "frames_per_clip": 4, "frame_rate_hz": 2.0,
        "resolution": [96, 64], "format": "webdataset", "privacy_required": False, "val_fraction": 0.0, "seed": 0}


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
    """(landing, store, summary): veh-a/drive-1 and veh-b/drive-1 hold the same files; veh-c/drive-2 another drive."""
    tmp = tmp_path_factory.mktemp("storefaults")
    clip = encode_testsrc(tmp / "clip.mp4")
    landing, store = tmp / "landing", tmp / "store"
    for vehicle, drive in (("veh-a", "drive-1"), ("veh-b", "drive-1"), ("veh-c", "drive-2")):
        build_drive(clip, landing, vehicle, drive)
    summary = run_curate(str(landing), str(store), CurateConfig(stages=()), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    return landing, store, summary


def _copy(store: Path, tmp: Path) -> Path:
    out = tmp / "store"
    shutil.copytree(store, out)
    return out


def _first_shard(store: Path) -> Path:
    layout = StoreLayout(str(store))
    return Path(layout.shard_path(read_manifest(layout).current()[0].shards[0]["name"]))


def _cli_verify(store: Path):
    from fleet_cli.main import cli

    return CliRunner().invoke(cli, ["store", "verify", str(store)])


def _outcome(check) -> str:
    """'handled' when ``check()`` holds, 'lost' when it returns False, 'traceback' when it raises."""
    try:
        return "handled" if check() else "lost"
    except Exception:  # noqa: BLE001 - any escaped exception is what the ledger counts as a traceback
        return "traceback"


def test_two_vehicles_same_drive_id(zone, ledger):
    _landing, store, summary = zone
    clips = Catalog(str(store)).read("clips")
    ids = clips["clip_id"].to_list()
    by_vehicle = set(clips["vehicle_id"].to_list())
    ok = summary["drives_curated"] == 3 and not summary["quarantined"] and len(ids) == len(set(ids)) and by_vehicle == {"veh-a", "veh-b", "veh-c"}
    ledger.record("store/two_vehicles_same_drive_id", "handled" if ok else "lost")
    assert summary["drives_curated"] == 3 and summary["quarantined"] == []
    assert len(ids) == len(set(ids)), f"clip ids repeat across vehicles: {ids}"
    assert by_vehicle == {"veh-a", "veh-b", "veh-c"}
    assert verify_clip_store(store) == []


def test_flipped_byte_in_a_store_shard_is_reported(zone, tmp_path, ledger):
    store = _copy(zone[1], tmp_path)
    shard = _first_shard(store)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    res = _cli_verify(store)
    name = shard.relative_to(store / "clips").as_posix()
    ok = res.exit_code == 1 and f"{name}: expected sha256" in res.output and "[sha256_mismatch]" in res.output
    ledger.record("store/flipped_byte_in_shard", "handled" if ok else ("traceback" if res.exception and res.exit_code != 1 else "lost"))
    assert res.exit_code == 1, res.output
    assert "[sha256_mismatch]" in res.output and name in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip() and not ln.startswith("Error:")]
    assert all(ln.startswith(name) for ln in lines), lines  # one line per problem, naming the shard


def test_truncated_store_shard_is_reported(zone, tmp_path, ledger):
    store = _copy(zone[1], tmp_path)
    shard = _first_shard(store)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    problems = verify_clip_store(store)
    codes = {p.code for p in problems}
    ok = {"size_mismatch", "tar_truncated"} <= codes
    ledger.record("store/truncated_shard", _outcome(lambda: ok and _cli_verify(store).exit_code == 1))
    assert {"size_mismatch", "tar_truncated"} <= codes, problems
    assert "catalog_past_end" in codes  # the index rows of the cut-off members point past the end


def test_catalog_row_pointing_past_the_end_is_reported(zone, tmp_path, ledger):
    from fleetcore.store.fs import read_parquet, write_parquet

    store = _copy(zone[1], tmp_path)
    layout = StoreLayout(str(store))
    gen = read_manifest(layout).current()[0]
    path = layout.resolve(gen.table("index"))
    rows = read_parquet(path).to_pylist()
    rows[-1]["data_offset"] += 10_000_000
    write_parquet(pa.Table.from_pylist(rows, schema=read_parquet(path).schema), path)
    problems = verify_clip_store(store)
    bad = [p for p in problems if p.code == "catalog_past_end"]
    ledger.record("store/catalog_row_past_end", _outcome(lambda: bool(bad) and bad[0].member == rows[-1]["member"]))
    assert bad and bad[0].member == rows[-1]["member"], problems
    assert all(p.code.startswith("catalog_") for p in problems), problems  # the shard itself is intact


def _build(store: Path, root: Path, tmp: Path):
    from pipelines.build_dataset import run_build_dataset

    spec = tmp / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    return run_build_dataset(spec, store=str(store), datasets_root=root, beam_args=["--runner=FnApiRunner"])


@pytest.fixture(scope="module")
def dataset(zone, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("storefaults_ds")
    return Path(_build(zone[1], tmp / "root", tmp).path)


def _corrupt_dataset_member(dataset: Path, tmp: Path) -> tuple[Path, str]:
    """A copy of the dataset with one byte of one JPEG member flipped; returns (copy, member)."""
    from fleetcore.datasets.build import INDEX_NAME

    out = tmp / "ds"
    shutil.copytree(dataset, out)
    with pa.memory_map(str(out / INDEX_NAME), "r") as mm:
        rows = pa.ipc.open_file(mm).read_all().to_pylist()
    r = next(r for r in rows if r["member"].endswith(".jpg"))
    p = out / r["shard"]
    data = bytearray(p.read_bytes())
    data[r["data_offset"] + r["size"] // 2] ^= 0x40
    p.write_bytes(bytes(data))
    return out, r["member"]


def test_loader_corrupt_member_raises(dataset, tmp_path, ledger):
    from fleetcore.datasets.loader import CorruptSample, DatasetLoader

    ds, member = _corrupt_dataset_member(dataset, tmp_path)
    got: list[BaseException] = []
    try:
        list(DatasetLoader(ds, shuffle_buffer=0))
    except CorruptSample as exc:
        got.append(exc)
    except Exception as exc:  # noqa: BLE001 - counted as a traceback
        ledger.record("store/loader_corrupt_member_raise", "traceback")
        raise AssertionError(f"untyped error {exc!r}") from exc
    ok = bool(got) and getattr(got[0], "member", None) == member and got[0].code == "sample_corrupt"
    ledger.record("store/loader_corrupt_member_raise", "handled" if ok else "lost")
    assert got, "the loader yielded a corrupt sample without a word"
    assert got[0].member == member and got[0].code == "sample_corrupt"


def test_loader_corrupt_member_skipped(dataset, tmp_path, ledger, caplog):
    from fleetcore.datasets.loader import DatasetLoader

    ds, member = _corrupt_dataset_member(dataset, tmp_path)
    ld = DatasetLoader(ds, shuffle_buffer=0, on_corrupt="skip")
    keys = [s["__key__"] for s in ld]
    bad = member.split(".", 1)[0]
    n = len(DatasetLoader(dataset, shuffle_buffer=0))
    ok = bad not in keys and len(keys) == n - 1 and [k for k, _ in ld.skipped] == [bad]
    ledger.record("store/loader_corrupt_member_skip", "handled" if ok else "lost")
    assert bad not in keys and len(keys) == n - 1
    assert [k for k, _ in ld.skipped] == [bad] and "sha256" in ld.skipped[0][1]
    assert any("skipped sample" in r.getMessage() for r in caplog.records)


def test_dataset_build_skips_an_undecodable_clip(zone, tmp_path, ledger):
    from fleetcore.datasets.manifest import read_manifest as read_dataset

    store = _copy(zone[1], tmp_path)
    cat = Catalog(str(store))
    index = cat.read("index").filter(cat.read("index")["member"].str.ends_with(".jpg"))
    shard, key, off = index.row(0)[0], index.row(0, named=True)["key"], index.row(0, named=True)["data_offset"]
    clip_id = cat.read("clips").filter(cat.read("clips")["member_key"] == key)["clip_id"][0]
    p = Path(cat.shard_path(shard))
    data = bytearray(p.read_bytes())
    data[off: off + 4] = b"\0\0\0\0"  # no JPEG start-of-image marker: the frame does not decode
    p.write_bytes(bytes(data))
    try:
        res = _build(store, tmp_path / "root", tmp_path)
    except Exception:
        ledger.record("store/dataset_build_undecodable_clip", "traceback")
        raise
    doc = read_dataset(res.path)
    skipped = doc.get("skipped", [])
    ok = [s["clip_id"] for s in skipped] == [clip_id] and res.samples == cat.read("clips").height - 1
    ledger.record("store/dataset_build_undecodable_clip", "handled" if ok else "lost")
    assert [s["clip_id"] for s in skipped] == [clip_id], skipped
    assert "decode" in skipped[0]["reason"]
    assert res.samples == cat.read("clips").height - 1
    assert clip_id not in {s["clip_id"] for s in doc["samples"]}
