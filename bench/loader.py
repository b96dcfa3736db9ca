"""Loader throughput: our DatasetLoader vs the webdataset library on the same tar shards, and
Arrow tensor shards vs the raw read bound of the same files.

    .venv/bin/python bench/loader.py [--quick] [--json OUT] [--store STORE] [--workdir DIR]

Without ``--store`` it simulates a small fleet and curates it first (~15 s). It builds one
webdataset and one Arrow dataset from the same spec (2 cameras x 8 frames at 320x180, every clip
repeated with class weights to get enough samples), then measures, each pass warm (the files were
read once before, so the page cache holds them):

* ``ours_wds``: ``DatasetLoader.batches(16, buffers=2)`` with JPEG decode (simplejpeg straight into
  two rotating preallocated batch arrays); ``*_fresh_arrays``: the same with ``buffers=0`` (a new
  array per batch: for 44 MB batches every batch pays page faults on fresh memory);
* ``webdataset``: ``wds.WebDataset(urls).decode("rgb8").map(stack frames into the same
  (cameras, frames, H, W, 3) array).to_tuple(...).batched(16)`` — the library's own pipeline
  producing the same batches;
* ``ours_arrow``: ``DatasetLoader.batches(16, buffers=2)`` over memory-mapped Arrow shards (the
  batch copy reads every frame byte);
* ``raw_read``: ``cat`` of the same Arrow files to /dev/null (the read bound), MB/s.

Each number is the best of several warm passes, the contenders' passes interleaved. Peak memory:
``ru_maxrss`` of the process, and the tracemalloc peak of Python/numpy allocations during one extra
pass of each loader.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleetcore.store.catalog import Catalog  # noqa: E402
from fleetcore.datasets.manifest import read_manifest  # noqa: E402
from fleetcore.datasets.loader import DatasetLoader  # noqa: E402

log = logging.getLogger("bench.loader")
BATCH = 16


def make_store(work: Path) -> Path:
    from fleetcore.clips import CurateConfig
    from fleetcore.simulate import simulate_fleet
    from pipelines.curate import run_curate

    store = work / "store"
    if (store / "clips" / "manifest.json").is_file():
        return store
    simulate_fleet(work / "landing", vehicles=2, drives_per_vehicle=1, cameras=2, width=320, height=180, fps=10.0, duration_s=30.0, seed=7)
    run_curate(str(work / "landing"), str(store), CurateConfig(),
               beam_args=["--runner=FnApiRunner"])
    return store


def build(store: Path, work: Path, fmt: str, copies: float) -> Path:
    import yaml

    from pipelines.build_dataset import run_build_dataset

    triggers = Catalog(str(store)).read("clips")["primary_trigger"].unique().to_list()
    spec = {
        "name": f"bench_{fmt}", "cameras": ["front", "left"], "frames_per_clip": 8, "frame_rate_hz": 4.0,
        "resolution": [320, 180], "format": fmt, "shard_bytes": 32 * 2**20, "seed": 0, "val_fraction": 0.0,
        "class_weights": {t: copies for t in triggers},
    }
    f = work / f"bench_{fmt}.yaml"
    f.write_text(yaml.safe_dump(spec))
    return Path(run_build_dataset(f, store=str(store), datasets_root=work / "datasets", beam_args=["--runner=FnApiRunner"]).path)


def ours(path: Path, buffers: int = 2) -> int:
    n = 0
    for b in DatasetLoader(path, shuffle_buffer=0, shuffle_shards=False).batches(BATCH, buffers=buffers):
        n += len(b["__key__"])
    return n


def webdataset_pipeline(path: Path) -> int:
    import webdataset as wds

    doc = read_manifest(path)
    cams = doc["geometry"]["cameras"]
    F = doc["geometry"]["frames_per_clip"]
    urls = [str(path / s["name"]) for s in doc["shards"]]

    def to_arrays(s: dict[str, Any]) -> dict[str, Any]:
        frames = np.stack([np.stack([s[f"{c}.{i:03d}.jpg"] for i in range(F)]) for c in cams])
        return {"__key__": s["__key__"], "frames": frames, "telemetry": s["telemetry.npy"]}

    n = 0
    pipeline = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .decode("rgb8")
        .map(to_arrays)
        .to_tuple("__key__", "frames", "telemetry")
        .batched(BATCH)  # webdataset's own collation: np.stack of the arrays
    )
    for keys, frames, _tel in pipeline:
        assert frames.shape[0] == len(keys)
        n += len(keys)
    return n


def raw_read(files: list[Path]) -> float:
    t = time.perf_counter()
    subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def timed_many(fns: dict[str, Callable[[], int]], repeats: int) -> dict[str, tuple[float, int]]:
    """Best wall time of ``repeats`` warm passes of each function, the passes interleaved (so a
    burst of load on the machine hits every contender alike); one unmeasured warm-up pass each."""
    best = {k: (float("inf"), 0) for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            n = fn()
            dt = time.perf_counter() - t
            if dt < best[k][0]:
                best[k] = (dt, n)
    return best


def traced_peak(fn: Callable[[], int]) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--store", default=None, help="existing clip store (default: simulate + curate one)")
    ap.add_argument("--workdir", default=None, help="where to put the store and datasets (default: a temp folder)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    copies = 8.0 if args.quick else 24.0
    repeats = 3 if args.quick else 5
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as td:
        work = Path(args.workdir or td)
        work.mkdir(parents=True, exist_ok=True)
        store = Path(args.store) if args.store else make_store(work)
        wds_path = build(store, work, "webdataset", copies)
        arrow_path = build(store, work, "arrow", copies)
        doc = read_manifest(wds_path)
        n_samples = len(doc["samples"])
        res: dict[str, Any] = {"samples": n_samples, "batch": BATCH, "frames_shape": doc["geometry"]["frames_shape"], "repeats": repeats}

        tm = timed_many({"ours": lambda: ours(wds_path), "wds": lambda: webdataset_pipeline(wds_path),
                         "ours_fresh": lambda: ours(wds_path, 0)}, repeats)
        (t_ours, n1), (t_wds, n2), (t_wf, n4) = tm["ours"], tm["wds"], tm["ours_fresh"]
        res["ours_wds"] = {"seconds": t_ours, "samples_per_s": n1 / t_ours}
        res["webdataset"] = {"seconds": t_wds, "samples_per_s": n2 / t_wds}
        res["ours_wds_fresh_arrays"] = {"seconds": t_wf, "samples_per_s": n4 / t_wf}
        assert n1 == n2 == n_samples, (n1, n2, n_samples)
        res["speedup_vs_webdataset"] = (n1 / t_ours) / (n2 / t_wds)

        adoc = read_manifest(arrow_path)
        files = [arrow_path / s["name"] for s in adoc["shards"]]
        nbytes = sum(s["bytes"] for s in adoc["shards"])
        ta = timed_many({"raw": lambda: (raw_read(files), 0)[1], "ours": lambda: ours(arrow_path), "ours_fresh": lambda: ours(arrow_path, 0)}, repeats)
        t_raw = ta["raw"][0]
        (t_arrow, n3), (t_af, n5) = ta["ours"], ta["ours_fresh"]
        res["raw_read"] = {"seconds": t_raw, "mb_per_s": nbytes / t_raw / 1e6, "bytes": nbytes}
        res["ours_arrow"] = {"seconds": t_arrow, "samples_per_s": n3 / t_arrow, "mb_per_s": nbytes / t_arrow / 1e6}
        res["ours_arrow_fresh_arrays"] = {"seconds": t_af, "samples_per_s": n5 / t_af, "mb_per_s": nbytes / t_af / 1e6}
        res["arrow_vs_raw"] = (nbytes / t_arrow) / (nbytes / t_raw)
        res["maxrss_mb"] = maxrss_mb()

        res["tracemalloc_peak_mb"] = {
            "ours_wds": traced_peak(lambda: ours(wds_path)) / 2**20,
            "webdataset": traced_peak(lambda: webdataset_pipeline(wds_path)) / 2**20,
            "ours_arrow": traced_peak(lambda: ours(arrow_path)) / 2**20,
        }
        res["goals"] = [
            {"figure": "loader: samples/s vs webdataset (tar, decode)", "value": round(res["speedup_vs_webdataset"], 3), "goal": ">= 1.5x",
             "met": res["speedup_vs_webdataset"] >= 1.5},
            {"figure": "loader: Arrow shard read / raw read bound (bytes/s)", "value": round(res["arrow_vs_raw"], 3), "goal": ">= 0.5",
             "met": res["arrow_vs_raw"] >= 0.5},
        ]

    rows = [
        ("ours (tar, decode)", f"{res['ours_wds']['samples_per_s']:.1f} samples/s", f"{res['tracemalloc_peak_mb']['ours_wds']:.1f} MiB"),
        ("webdataset (decode rgb8)", f"{res['webdataset']['samples_per_s']:.1f} samples/s", f"{res['tracemalloc_peak_mb']['webdataset']:.1f} MiB"),
        ("ours (arrow, mmap)", f"{res['ours_arrow']['samples_per_s']:.1f} samples/s, {res['ours_arrow']['mb_per_s']:.0f} MB/s", f"{res['tracemalloc_peak_mb']['ours_arrow']:.1f} MiB"),
        ("raw read (cat, warm)", f"{res['raw_read']['mb_per_s']:.0f} MB/s", "-"),
        ("ours tar, fresh arrays", f"{res['ours_wds_fresh_arrays']['samples_per_s']:.1f} samples/s", "-"),
        ("ours arrow, fresh arrays", f"{res['ours_arrow_fresh_arrays']['samples_per_s']:.1f} samples/s, {res['ours_arrow_fresh_arrays']['mb_per_s']:.0f} MB/s", "-"),
    ]
    w = max(len(r[0]) for r in rows)
    sys.stdout.write(f"{'loader':<{w}}  {'throughput':<34} py-alloc peak\n")
    for a, b, c in rows:
        sys.stdout.write(f"{a:<{w}}  {b:<34} {c}\n")
    sys.stdout.write(f"speedup vs webdataset: {res['speedup_vs_webdataset']:.2f}x (goal >= 1.5)   arrow / raw read: {res['arrow_vs_raw']:.2f} (goal >= 0.5)"
                     f"   max RSS {maxrss_mb():.0f} MiB   samples {n_samples}\n")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
