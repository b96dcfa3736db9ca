"""The whole curate job against the decode bound, on the same files in the same run.

Simulates a realistic fleet (default 8 drives x 3 cameras x 60 s at 1280x720, 30 fps, H.264) and a
trigger that cuts ten-second windows over every drive, then measures:

(i)   the decode bound: ``ffmpeg -i X -f null -`` over every camera file (the bundled ffmpeg, its own
      threading), frames per second;
(ii)  ``fleet curate`` without stages and (iii) with the default stages (labels + privacy), 640 px:
      frames decoded per second of job time, the ratio to (i) (goals: >= 0.6 without stages,
      >= 0.4 with them), the seconds of work per stage (validate, index, tables, decode, labels,
      privacy, encode, stage, pack, commit; summed over threads) and the cores kept busy
      (CPU seconds / wall seconds);
(iv)  with ``--peer``: video2dataset's exact clipping of the same windows, run from its own virtual
      environment (``bench/.peer-venv``, made on first use: it pins numpy < 2, never ours).

    .venv/bin/python bench/e2e.py [--quick] [--root DIR] [--json bench/results/e2e.json] [--peer]

``--quick``: 2 drives x 3 cameras x 20 s (the same code path, in about a minute).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import ffmpeg

from fleetcore.clips import CurateConfig
from fleetcore.video.ffmpeg import run
from pipelines.curate import DEFAULT_RUNNER, run_curate

log = logging.getLogger("bench.e2e")

#: Ten-second windows over the whole of every drive (max_clip_s splits the one long event).
EVERYTHING = """name: everything
version: 1
description: Every moment of the drive (bench only).
where: "t_s >= 0"
min_duration_s: 0.0
"""


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def make_fleet(root: Path, *, drives: int, cameras: int, duration_s: float, width: int, height: int, fps: float) -> Path:
    from fleetcore.simulate import simulate_fleet

    landing = root / "landing"
    if not landing.is_dir():
        t = time.perf_counter()
        simulate_fleet(landing, vehicles=drives, drives_per_vehicle=1, cameras=cameras, width=width, height=height, fps=fps,
                       duration_s=duration_s, seed=42)
        log.info("simulated %d drives x %d cameras x %.0f s at %dx%d %g fps in %.0f s", drives, cameras, duration_s, width, height,
                 fps, time.perf_counter() - t)
    return landing


def decode_bound(videos: list[Path]) -> dict[str, Any]:
    """``ffmpeg -f null`` over every file, one after the other (ffmpeg threads each decode)."""
    frames = 0
    for v in videos:
        with av.open(str(v)) as c:
            frames += c.streams.video[0].frames or sum(1 for _ in c.demux(c.streams.video[0]) if _.size)
    t, c = time.perf_counter(), _cpu()
    for v in videos:
        run(ffmpeg.input(str(v)).output("-", f="null"), path=v)
    dt = time.perf_counter() - t
    return {"frames": frames, "seconds": round(dt, 3), "fps": round(frames / dt, 1), "cores_busy": round((_cpu() - c) / dt, 2)}


def curate(landing: Path, store: Path, triggers: Path, *, stages: tuple[str, ...]) -> dict[str, Any]:
    cfg = CurateConfig(stages=stages, trigger_paths=(str(triggers),), max_clip_s=10.0)
    t, c = time.perf_counter(), _cpu()
    s = run_curate(str(landing), str(store), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    dt = time.perf_counter() - t
    return {"seconds": round(dt, 3), "clips": s["clips"], "frames_decoded": s["frames_decoded"],
            "decoded_fps": round(s["frames_decoded"] / dt, 1), "cores_busy": round((_cpu() - c) / dt, 2),
            "stage_seconds": s.get("stage_seconds"), "bytes_written": s["bytes_written"]}


def peer_video2dataset(root: Path, landing: Path, windows: list[tuple[str, float, float]]) -> dict[str, Any]:
    """video2dataset's exact clipping of the same windows, in its own virtual environment."""
    venv = Path(__file__).with_name(".peer-venv")
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "video2dataset"], check=True)
    table = root / "peer.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_video: dict[str, list[list[float]]] = {}
    for path, a, b in windows:
        by_video.setdefault(path, []).append([a, b])
    pq.write_table(pa.table({"url": list(by_video), "clips": list(by_video.values())}), table)
    out = root / "peer-out"
    t = time.perf_counter()
    subprocess.run([str(py), "-m", "video2dataset", "--url_list", str(table), "--input_format", "parquet", "--url_col", "url",
                    "--clip_col", "clips", "--output_folder", str(out), "--output_format", "webdataset", "--processes_count", "2",
                    "--thread_count", "2", "--config", "default"], check=True, capture_output=True)
    return {"seconds": round(time.perf_counter() - t, 3), "windows": len(windows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 drives x 3 cameras x 20 s instead of 8 x 3 x 60 s")
    ap.add_argument("--root", type=Path, default=None, help="keep (and reuse) the simulated fleet here")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--peer", action="store_true", help="also run video2dataset on the same windows (own venv)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    drives, duration = (2, 20.0) if args.quick else (8, 60.0)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        root = args.root or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        landing = make_fleet(root, drives=drives, cameras=3, duration_s=duration, width=1280, height=720, fps=30.0)
        triggers = root / "everything.yaml"
        triggers.write_text(EVERYTHING)
        videos = sorted(landing.rglob("*.mp4"))
        bound = decode_bound(videos)
        log.info("decode bound: %s", bound)
        runs = {}
        for name, stages in (("without stages", ()), ("default stages", CurateConfig.stages)):
            store = root / f"store-{len(runs)}"
            subprocess.run(["rm", "-rf", str(store)], check=True)
            runs[name] = r = curate(landing, store, triggers, stages=stages)
            r["ratio_to_bound"] = round(r["decoded_fps"] / bound["fps"], 3)
            log.info("%s: %s", name, r)
        doc: dict[str, Any] = {
            "fleet": {"drives": drives, "cameras": 3, "duration_s": duration, "size": "1280x720", "fps": 30, "max_side": 640,
                      "source_bytes": sum(v.stat().st_size for v in videos)},
            "cpus": os.cpu_count(), "load_avg": list(os.getloadavg()), "decode_bound": bound, "curate": runs,
            "goals": [
                {"figure": "curate without stages / ffmpeg -f null (decoded fps)", "value": runs["without stages"]["ratio_to_bound"],
                 "goal": ">= 0.6", "met": runs["without stages"]["ratio_to_bound"] >= 0.6},
                {"figure": "curate with default stages / ffmpeg -f null (decoded fps)", "value": runs["default stages"]["ratio_to_bound"],
                 "goal": ">= 0.4", "met": runs["default stages"]["ratio_to_bound"] >= 0.4},
            ],
        }
        if args.peer:
            windows = [(str(v), float(a), float(min(a + 10, duration))) for v in videos for a in range(0, int(duration), 10)]
            doc["peer_video2dataset"] = peer = peer_video2dataset(root, landing, windows)
            peer["speedup_ours_default_stages"] = round(peer["seconds"] / runs["default stages"]["seconds"], 2)
        print(f"decode bound (ffmpeg -f null): {bound['fps']:.0f} fps over {bound['frames']} frames")
        for name, r in runs.items():
            print(f"curate, {name}: {r['decoded_fps']:.0f} fps = {r['ratio_to_bound']:.2f} of the bound, {r['seconds']:.1f} s, "
                  f"{r['cores_busy']:.2f} cores busy")
            if r["stage_seconds"]:
                print("   seconds of work per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in r["stage_seconds"].items()))
        if "peer_video2dataset" in doc:
            print(f"video2dataset: {doc['peer_video2dataset']['seconds']:.1f} s "
                  f"({doc['peer_video2dataset']['speedup_ours_default_stages']:.1f}x ours with the default stages)")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
