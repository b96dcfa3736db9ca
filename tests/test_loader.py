"""The dataset loader: partitioning over ranks x workers, seeded shuffling, resume without repeats
or gaps, safe in-place tar reads, zero-copy Arrow views, collate — on real built datasets."""

from __future__ import annotations

import io
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from fleetcore.datasets.manifest import read_manifest
from fleetcore.datasets.loader import DatasetLoader, collate_numpy, collate_torch
from fleetcore.store.tario import UnsafeTarMember

pytestmark = pytest.mark.slow

SPEC = {
    "name": "loader",
    "cameras": ["front", "left"],
    "frames_per_clip": 3,
    "frame_rate_hz": 2.0,
    "resolution": [64, 48],
    "val_fraction": 0.0,
    "shard_bytes": 40000,
    "seed": 5,
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    from fleetcore.clips import CurateConfig
    from fleetcore.store.catalog import Catalog
    from fleetcore.simulate import simulate_fleet
    from pipelines.build_dataset import run_build_dataset
    from pipelines.curate import run_curate

    tmp = tmp_path_factory.mktemp("loader")
    simulate_fleet(tmp / "landing", vehicles=2, drives_per_vehicle=1, cameras=2, width=320, height=180, fps=10.0, duration_s=30.0, seed=7)
    store = tmp / "store"
    run_curate(str(tmp / "landing"), str(store), CurateConfig(stages=("privacy",)), beam_args=["--runner=FnApiRunner"])
    triggers = Catalog(str(store)).read("clips")["primary_trigger"].unique().to_list()
    out = {}
    for fmt in ("webdataset", "arrow"):
        f = tmp / f"{fmt}.yaml"
        # three copies of every clip: enough samples to spread over several ranks and workers
        f.write_text(yaml.safe_dump(dict(SPEC, name=f"loader_{fmt}", format=fmt, class_weights={t: 3.0 for t in triggers})))
        res = run_build_dataset(f, store=str(store), datasets_root=tmp / "datasets", beam_args=["--runner=FnApiRunner"])
        out[fmt] = Path(res.path)
    return out


FORMATS = ["webdataset", "arrow"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("policy", ["truncate", "pad"])
def test_every_rank_and_worker_gets_the_same_count(datasets, fmt, policy):
    n = len(read_manifest(datasets[fmt])["samples"])
    assert n >= 9
    assert len(read_manifest(datasets[fmt])["shards"]) >= 3
    for world, workers in [(1, 1), (2, 1), (2, 2), (3, 2), (4, 3)]:
        counts = []
        consumed: list[int] = []
        for r in range(world):
            for w in range(workers):
                ld = DatasetLoader(datasets[fmt], rank=r, world_size=world, worker=w, num_workers=workers, policy=policy, shuffle_buffer=4, seed=1)
                got = [s["__key__"] for s in ld]
                counts.append(len(got))
                consumed.extend(ld.order(0))
        P = world * workers
        expect = n // P if policy == "truncate" else -(-n // P)
        assert counts == [expect] * P
        c = Counter(consumed)
        if policy == "truncate":
            assert max(c.values()) == 1 and len(c) == expect * P  # no repeats, at most P-1 skipped
        else:
            assert set(c) == set(range(n))  # everything, the first few repeated as padding
            assert sum(c.values()) - n == expect * P - n


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("policy", ["truncate", "pad"])
def test_resume_mid_epoch_no_repeats_no_gaps(datasets, fmt, policy):
    world, workers = 2, 2
    kw = {"world_size": world, "num_workers": workers, "policy": policy, "shuffle_buffer": 3, "seed": 11, "epoch": 2}
    first: dict[tuple[int, int], list[str]] = {}
    states = {}
    stop_after = {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 1}
    for r in range(world):
        for w in range(workers):
            ld = DatasetLoader(datasets[fmt], rank=r, worker=w, **kw)
            it = iter(ld)
            first[(r, w)] = [next(it)["__key__"] for _ in range(stop_after[(r, w)])]
            states[(r, w)] = ld.state_dict()
            assert states[(r, w)]["consumed"] == stop_after[(r, w)] and states[(r, w)]["epoch"] == 2
    # fresh loaders (a restarted job) continue from the saved states
    rest: dict[tuple[int, int], list[str]] = {}
    full: dict[tuple[int, int], list[str]] = {}
    for r in range(world):
        for w in range(workers):
            ld = DatasetLoader(datasets[fmt], rank=r, worker=w, **kw)
            ld.load_state_dict(states[(r, w)])
            if (r, w) == (1, 0):  # resume through the batch API too
                rest[(r, w)] = [k for b in ld.batches(2) for k in b["__key__"]]
            else:
                rest[(r, w)] = [s["__key__"] for s in ld]
            assert ld.state_dict()["epoch"] == 3 and ld.state_dict()["consumed"] == 0
            ref = DatasetLoader(datasets[fmt], rank=r, worker=w, **kw)
            full[(r, w)] = [s["__key__"] for s in ref]
    for slot in first:
        assert first[slot] + rest[slot] == full[slot]  # exactly the uninterrupted order
    union = [k for slot in sorted(first) for k in first[slot] + rest[slot]]
    ld = DatasetLoader(datasets[fmt], **{**kw, "world_size": world, "num_workers": workers})
    keys = [ld.samples[i][2] for i in ld.epoch_samples(2)]
    assert Counter(union) == Counter(keys)
    if policy == "truncate":
        assert len(set(union)) == len(union)
    assert len({len(v) for v in full.values()}) == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_few_open_shards_same_samples(datasets, fmt):
    p = datasets[fmt]
    a = [(s["__key__"], s["frames"].copy()) for s in DatasetLoader(p, shuffle_buffer=8, seed=2)]
    ld = DatasetLoader(p, shuffle_buffer=8, seed=2, max_open_shards=1)
    b = [(s["__key__"], s["frames"]) for s in ld]
    assert len(ld._open) == 1
    assert [k for k, _ in a] == [k for k, _ in b]
    for (_, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(x, y)  # Arrow views of closed shards stay readable


def test_order_is_deterministic_per_seed_and_epoch(datasets):
    p = datasets["webdataset"]
    a = DatasetLoader(p, seed=3, shuffle_buffer=4).order(0)
    assert a == DatasetLoader(p, seed=3, shuffle_buffer=4).order(0)
    assert sorted(a) == list(range(len(a)))
    assert DatasetLoader(p, seed=3, shuffle_buffer=4).order(1) != a
    assert DatasetLoader(p, seed=4, shuffle_buffer=4).order(0) != a
    # iterating twice walks two epochs
    ld = DatasetLoader(p, seed=3, shuffle_buffer=4)
    e0 = [s["__key__"] for s in ld]
    e1 = [s["__key__"] for s in ld]
    assert sorted(e0) == sorted(e1) and e0 != e1


def test_state_for_another_partition_is_refused(datasets):
    p = datasets["webdataset"]
    st = DatasetLoader(p, world_size=2, rank=0).state_dict()
    with pytest.raises(ValueError, match="rank"):
        DatasetLoader(p, world_size=2, rank=1).load_state_dict(st)
    with pytest.raises(ValueError):
        DatasetLoader(p, world_size=2, rank=0).load_state_dict({**st, "consumed": 10_000})
    with pytest.raises(ValueError):
        DatasetLoader(p, world_size=2, rank=2)


def test_tar_samples_match_webdataset_decoding(datasets):
    import webdataset as wds

    p = datasets["webdataset"]
    doc = read_manifest(p)
    ref = {}
    for s in wds.WebDataset([str(p / sh["name"]) for sh in doc["shards"]], shardshuffle=False, empty_check=False).decode("rgb8"):
        ref[s["__key__"]] = s
    ld = DatasetLoader(p, shuffle_buffer=0)
    n = 0
    for b in ld.batches(4):
        for i, key in enumerate(b["__key__"]):
            r = ref[key]
            for ci, cam in enumerate(ld.cameras):
                for fi in range(3):
                    np.testing.assert_array_equal(b["frames"][i, ci, fi], r[f"{cam}.{fi:03d}.jpg"])
            np.testing.assert_array_equal(b["telemetry"][i], r["telemetry.npy"])
            assert b["valid"][i].all()
            n += 1
    assert n == len(doc["samples"])
    raw = DatasetLoader(p, decode=False, shuffle_buffer=0).read(0)
    assert set(raw["members"]) >= {"json", "telemetry.npy", "front.000.jpg"}


def test_arrow_is_zero_copy_and_collates(datasets):
    p = datasets["arrow"]
    ld = DatasetLoader(p, shuffle_buffer=0)
    smp = ld.read(0)
    assert not smp["frames"].flags.owndata and smp["frames"].base is not None
    shard = ld._shard(0)
    size = (p / ld._shards[0]["name"]).stat().st_size
    shard.mmap.seek(0)
    whole = shard.mmap.read_buffer(size)
    assert whole.address <= smp["frames"].ctypes.data < whole.address + size
    batch = next(ld.batches(4))
    assert batch["frames"].shape == (4, 2, 3, 48, 64, 3) and batch["telemetry"].shape[:2] == (4, 3)
    c = collate_numpy([ld.read(i) for i in range(3)])
    assert c["frames"].shape == (3, 2, 3, 48, 64, 3) and len(c["__key__"]) == 3
    torch = pytest.importorskip("torch")
    t = collate_torch([ld.read(i) for i in range(3)], pin_memory=True)
    assert isinstance(t["frames"], torch.Tensor) and t["frames"].shape == (3, 2, 3, 48, 64, 3)
    assert t["frames"].is_pinned() == torch.cuda.is_available()


def test_torch_dataloader_with_workers(datasets):
    torch = pytest.importorskip("torch")
    from fleetcore.datasets.loader import torch_dataset

    p = datasets["webdataset"]
    n = len(read_manifest(p)["samples"])
    # workers from a fork server: forking this test process (threads of polars, onnxruntime, Dask from
    # earlier tests) can leave a lock held in the children; the dataset must pickle for it
    dl = torch.utils.data.DataLoader(torch_dataset(p, batch_size=2, shuffle_buffer=2, policy="truncate"), batch_size=None, num_workers=2,
                                     multiprocessing_context="forkserver")
    keys = [k for b in dl for k in b["__key__"]]
    assert len(keys) == len(set(keys)) == (n // 2) * 2


def _rewrite_shard(ds: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> str:
    doc = read_manifest(ds)
    name = doc["shards"][0]["name"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                ti = tarfile.TarInfo(m[0])
                ti.size = len(m[1])
                tar.addfile(ti, io.BytesIO(m[1]))
    (ds / name).write_bytes(buf.getvalue())
    return name


@pytest.mark.parametrize("bad", ["../escape.json", "/abs.json", "symlink", "hardlink"])
def test_loader_rejects_escaping_names_and_links(datasets, tmp_path, bad):
    ds = tmp_path / "ds"
    shutil.copytree(datasets["webdataset"], ds)
    doc = read_manifest(ds)
    key = doc["shards"][0]["keys"][0]
    if bad in ("symlink", "hardlink"):
        ti = tarfile.TarInfo(f"{key}.json")
        ti.type = tarfile.SYMTYPE if bad == "symlink" else tarfile.LNKTYPE
        ti.linkname = "/etc/passwd"
        members: list = [ti]
    else:
        members = [(bad, b"{}")]
    name = _rewrite_shard(ds, members)
    ld = DatasetLoader(ds, shuffle_buffer=0, shuffle_shards=False)
    assert ld._shards[0]["name"] == name
    with pytest.raises(UnsafeTarMember):
        ld.read(0)
    assert not (tmp_path / "escape.json").exists()


def test_arrow_shards_open_with_pyarrow_and_polars(datasets):
    import polars as pl

    p = datasets["arrow"]
    doc = read_manifest(p)
    for sh in doc["shards"]:
        with pa.memory_map(str(p / sh["name"]), "r") as mm:
            assert pa.ipc.open_file(mm).read_all().column("key").to_pylist() == sh["keys"]
        assert pl.read_ipc(p / sh["name"])["key"].to_list() == sh["keys"]
