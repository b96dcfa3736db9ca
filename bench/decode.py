"""Decode benchmark for fleetcore.video (a benchmark script, not a test).

    .venv/bin/python bench/decode.py [--quick] [--json OUT] [--threads 2] [--seconds 60]

For a generated test drive (ffmpeg ``testsrc2``, H.264, GOP 1 s) and the shared real
videos it measures:

(i)   the decode-only bound: ``ffmpeg -threads N -i X -f null -`` (imageio-ffmpeg binary), fps
      (the process start-up is included; a same-process PyAV decode-only rate is shown too);
(ii)  our extraction covering the whole drive, sampled at the native frame rate (consecutive
      10 s clips through one ClipExtractor; every frame converted to RGB and resized to
      max_side 640; OpenCV single-threaded, as in the curate job's workers): source frames
      decoded per second, and the ratio to (i) -- goal >= 0.8; the strictest case;
(ii') the same windows sampled at the curate job's default 10 Hz: every frame is still decoded,
      but only the sampled ones (a third of a 30 fps video) are converted;
(iii) the sparse case: clips covering ~10 % of the drive (e.g. 6 windows of 1 s spread out,
      sampled at 10 Hz), time relative to the full-coverage time of (ii) -- goal <= 0.2;
(iv)  the curate job on a small simulated fleet with and without the labels + privacy stages:
      the share of frames per second kept with them -- goal >= 0.6 -- and the CPU-seconds ratio.

``--only video`` or ``--only stages`` runs one half; ``--fleet 4x2`` runs (iv) on 4 vehicles x 2
drives instead of the default 2 x 1 (longer runs: the start-up and the last clip of each drive,
which nothing overlaps, weigh less).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import ffmpeg  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fleetcore.landing.drives import DriveWriter, read_manifest  # noqa: E402
from fleetcore.video import ClipExtractor, index_drive, probe_video, set_opencv_threads  # noqa: E402
from fleetcore.video.ffmpeg import encode_testsrc, run  # noqa: E402

log = logging.getLogger("bench.decode")
S = 1_000_000_000
T0 = 100 * S
DEFAULT_RATE_HZ = 10.0  # the curate job's default sample rate (CurateConfig.rate_hz)


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def ffmpeg_decode_fps(path: Path, frames: int, threads: int, repeats: int) -> tuple[float, float, float]:
    """fps and seconds of the best run, and the CPU seconds per frame of that run (user + system)."""
    best, best_cpu = float("inf"), 0.0
    for _ in range(repeats):
        t, c = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN)
        run(ffmpeg.input(str(path), threads=str(threads)).output("-", f="null"), path=path)
        dt = time.perf_counter() - t
        if dt < best:
            best, best_cpu = dt, (_cpu(resource.RUSAGE_CHILDREN) - c) / frames
    return frames / best, best, best_cpu


def pyav_decode_fps(path: Path, threads: int) -> tuple[float, float]:
    """Same-process decode-only bound (PyAV, no conversion): fps and seconds."""
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        st.thread_type = "AUTO"
        st.codec_context.thread_count = threads
        t = time.perf_counter()
        n = sum(1 for _ in c.decode(st))
        dt = time.perf_counter() - t
    return n / dt, dt


def land(root: Path, name: str, video: Path) -> tuple[Path, dict[str, Any]]:
    w = DriveWriter(root, "bench", f"bench-{name}", overwrite=True)
    rel = f"cameras/front/000{video.suffix}"
    shutil.copyfile(video, w.file(rel))
    w.finish({"utc_offset_ns": 0, "telemetry": None, "source": "dashcam", "notes": None,
              "cameras": [{"name": "front", "codec": None, "files": [{"path": rel, "start_ns": T0, "frame_times": None}]}]})
    return w.path, read_manifest(w.path)


def run_extraction(ddir: Path, manifest: dict, fi: Any, windows: list[tuple[int, int]], rate_hz: float, threads: int) -> dict[str, Any]:
    t, c = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    samples = missing = 0
    with ClipExtractor(ddir, manifest, fi, max_side=640, threads=threads) as ex:
        for a, b in windows:
            clip = ex.extract(a, b, rate_hz=rate_hz)
            samples += clip.num_samples
            missing += int(clip.missing("front").sum())
            del clip
        decoded = ex.frames_decoded
    dt = time.perf_counter() - t
    cpu = _cpu(resource.RUSAGE_SELF) - c
    return {"seconds": dt, "frames_decoded": decoded, "samples": samples, "missing": missing, "decoded_fps": decoded / dt if dt else 0.0,
            "cpu_ms_per_frame": 1e3 * cpu / max(1, decoded)}


def bench_video(name: str, video: Path, root: Path, *, threads: int, repeats: int) -> dict[str, Any]:
    t = time.perf_counter()
    info = probe_video(video)
    probe_s = time.perf_counter() - t
    ddir, manifest = land(root, name, video)
    t = time.perf_counter()
    fi = index_drive(ddir, manifest)
    index_s = time.perf_counter() - t
    dur_ns = int(round(info.duration_s * S))
    end = T0 + dur_ns
    clip_ns = 10 * S
    full_windows = [(a, min(a + clip_ns, end)) for a in range(T0, end, clip_ns)]
    # ~10 % coverage: 6 windows of 1 s on a long drive; 3 shorter ones on short videos
    n_win = 6 if info.duration_s >= 30 else 3
    win_ns = int(0.10 * dur_ns / n_win)
    sparse_windows = []
    for k in range(n_win):
        centre = T0 + int((k + 0.5) * dur_ns / n_win)
        sparse_windows.append((centre - win_ns // 2, centre - win_ns // 2 + win_ns))

    # Interleave the measurements (the machine may be shared) and keep the best of each.
    # Each round also gives a paired ratio (extraction right after its bound, so both saw about the
    # same machine); its median is steadier than the ratio of the two best runs on a noisy host.
    ff_fps = ff_s = pyav_fps = ff_cpu = 0.0
    full: dict[str, Any] | None = None
    full10: dict[str, Any] | None = None
    sparse: dict[str, Any] | None = None
    paired: list[float] = []
    paired10: list[float] = []
    for _ in range(repeats):
        f_fps, f_s, f_cpu = ffmpeg_decode_fps(video, info.frame_count, threads, 1)
        if f_fps > ff_fps:
            ff_fps, ff_s, ff_cpu = f_fps, f_s, f_cpu
        pyav_fps = max(pyav_fps, pyav_decode_fps(video, threads)[0])
        r = run_extraction(ddir, manifest, fi, full_windows, info.fps, threads)
        paired.append(r["decoded_fps"] / f_fps)
        if full is None or r["seconds"] < full["seconds"]:
            full = r
        # the job's default: the same windows sampled at 10 Hz (every frame decoded, a third converted at 30 fps)
        r = run_extraction(ddir, manifest, fi, full_windows, DEFAULT_RATE_HZ, threads)
        paired10.append(r["decoded_fps"] / f_fps)
        if full10 is None or r["seconds"] < full10["seconds"]:
            full10 = r
        r = run_extraction(ddir, manifest, fi, sparse_windows, DEFAULT_RATE_HZ, threads)
        if sparse is None or r["seconds"] < sparse["seconds"]:
            sparse = r
    assert full is not None and full10 is not None and sparse is not None
    return {
        "name": name,
        "path": str(video),
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "frames": info.frame_count,
        "duration_s": info.duration_s,
        "gop_frames": (info.keyframe_indices[1] - info.keyframe_indices[0]) if len(info.keyframe_indices) > 1 else info.frame_count,
        "probe_s": probe_s,
        "index_s": index_s,
        "ffmpeg_decode_s": ff_s,
        "ffmpeg_decode_fps": ff_fps,
        "ffmpeg_cpu_ms_per_frame": 1e3 * ff_cpu,
        # CPU work per frame, the bound's over ours: what the ratio would be with every core busy in both
        "cpu_ratio_to_ffmpeg": 1e3 * ff_cpu / full["cpu_ms_per_frame"] if full["cpu_ms_per_frame"] else 0.0,
        "pyav_decode_fps": pyav_fps,
        "full_ratio_to_pyav": full["decoded_fps"] / pyav_fps,
        "full": full,
        "full_ratio_to_ffmpeg": full["decoded_fps"] / ff_fps,
        "full_ratio_to_ffmpeg_paired": paired,
        "full_ratio_to_ffmpeg_median": float(np.median(paired)),
        "full_10hz": full10,
        "full_10hz_ratio_to_ffmpeg": full10["decoded_fps"] / ff_fps,
        "full_10hz_ratio_to_ffmpeg_paired": paired10,
        "full_10hz_ratio_to_ffmpeg_median": float(np.median(paired10)),
        "sparse_windows": len(sparse_windows),
        "sparse_coverage": sum(b - a for a, b in sparse_windows) / dur_ns,
        "sparse": sparse,
        "sparse_time_ratio": sparse["seconds"] / full["seconds"],
        "sparse_frames_ratio": sparse["frames_decoded"] / max(1, full["frames_decoded"]),
    }


def bench_curate_stages(root: Path, *, quick: bool, repeats: int, console: Console, vehicles: int = 2, drives: int = 1) -> dict[str, Any]:
    """The curate job on a simulated fleet with and without the labels + privacy stages: source
    frames decoded per second of job time, and the ratio (goal >= 0.6); the runs interleaved,
    best of ``repeats``. Both with the default overlap of decoding and post-processing
    (``--post-workers 2``) and without it (``0``); plus the process CPU seconds of each run (the
    cost when every core is busy anyway, e.g. one Beam worker per core)."""
    import shutil

    import polars as pl

    from fleetcore.clips import CurateConfig
    from fleetcore.simulate import simulate_fleet
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    landing = root / "sim-landing"
    simulate_fleet(landing, vehicles=vehicles, drives_per_vehicle=drives, cameras=3, width=640, height=360, fps=20.0,
                   duration_s=20.0 if quick else 30.0, seed=11)
    runs = [(f"{name}, post_workers={w}", CurateConfig(stages=stages, post_workers=w))
            for w in (2, 0) for name, stages in (("without stages", ()), ("labels + privacy", CurateConfig.stages))]
    out: dict[str, Any] = {"fleet": {"vehicles": vehicles, "drives_per_vehicle": drives, "cameras": 3, "size": "640x360", "fps": 20.0}}
    rounds: list[dict[str, float]] = []
    for rep in range(repeats):
        rounds.append({})
        for i, (name, cfg) in enumerate(runs):
            console.log(f"curate on the simulated fleet, {name} (run {rep + 1}/{repeats}) ...")
            store = root / f"store-{i}"
            shutil.rmtree(store, ignore_errors=True)
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            s = run_curate(str(landing), str(store), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            cat = pl.read_parquet(str(store / "catalog" / "clips" / "**" / "*.parquet"))
            samples = int((cat["n_samples"] * cat["cameras"].list.len()).sum())
            r = {"seconds": s["seconds"], "cpu_seconds": cpu, "clips": s["clips"], "frames_decoded": s["metrics"]["frames_decoded"],
                 "frames_stored": samples, "decoded_fps": s["metrics"]["frames_decoded"] / s["seconds"],
                 "stored_fps": samples / s["seconds"], "cores_busy": cpu / s["seconds"]}
            st = s.get("stage_seconds") or {}
            for stage in ("privacy", "labels"):
                if stage in st:  # the stage's seconds of work (summed over the worker threads) per stored frame
                    r[f"{stage}_ms_per_stored_frame"] = round(1000 * st[stage] / max(1, samples), 2)
            rounds[-1][name] = r["seconds"]
            if name not in out or r["seconds"] < out[name]["seconds"]:
                out[name] = r
    for w in (2, 0):
        a, b = out[f"without stages, post_workers={w}"], out[f"labels + privacy, post_workers={w}"]
        out[f"ratio_post_workers_{w}"] = b["decoded_fps"] / a["decoded_fps"]
        out[f"cpu_ratio_post_workers_{w}"] = a["cpu_seconds"] / b["cpu_seconds"]
        # per round, the two runs back to back (steadier than the ratio of the best runs on a noisy host)
        paired = sorted(r[f"without stages, post_workers={w}"] / r[f"labels + privacy, post_workers={w}"] for r in rounds)
        out[f"ratio_post_workers_{w}_paired"] = paired
        out[f"ratio_post_workers_{w}_median"] = float(np.median(paired))
    out["ratio"] = out["ratio_post_workers_2"]
    return out


def print_stages(console: Console, stages: dict[str, Any]) -> None:
    f = stages["fleet"]
    st = Table(title=f"curate job on a simulated fleet ({f['vehicles']} vehicles x {f['drives_per_vehicle']} drives x {f['cameras']} cameras, "
                     f"{f['size']} {f['fps']:g} fps, 10 Hz samples): labels + privacy cost, best of the runs")
    for col in ("run", "seconds", "CPU s", "cores busy", "clips", "frames decoded", "frames stored", "decoded fps", "stored fps"):
        st.add_column(col, justify="right")
    for name, r in stages.items():
        if isinstance(r, dict) and "seconds" in r:
            st.add_row(name, f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}", f"{r['cores_busy']:.2f}", str(r["clips"]), str(r["frames_decoded"]),
                       str(r["frames_stored"]), f"{r['decoded_fps']:.0f}", f"{r['stored_fps']:.0f}")
    console.print(st)
    console.print(f"labels + privacy keep {stages['ratio_post_workers_2']:.2f} of the frames per second (goal >= 0.6; default --post-workers 2; "
                  f"median of the rounds {stages['ratio_post_workers_2_median']:.2f}); "
                  f"{stages['ratio_post_workers_0']:.2f} with --post-workers 0 (median {stages['ratio_post_workers_0_median']:.2f})")
    with_stages = stages.get("labels + privacy, post_workers=0", {})
    if "privacy_ms_per_stored_frame" in with_stages:
        console.print(f"privacy stage: {with_stages['privacy_ms_per_stored_frame']:.1f} ms of work per stored frame "
                      f"(labels: {with_stages.get('labels_ms_per_stored_frame', float('nan')):.1f} ms), --post-workers 0")
    console.print(f"CPU seconds without / with the stages: {stages['cpu_ratio_post_workers_2']:.2f} (post-workers 2), "
                  f"{stages['cpu_ratio_post_workers_0']:.2f} (0): the ratio when every core is already busy")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 s synthetic drive, one repeat")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=None, help="synthetic drive length (default 60, 20 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="measurements per case, best kept (default 5, 2 with --quick)")
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--opencv-threads", type=int, default=1,
                    help="OpenCV threads for the extraction runs (the curate job's default is 1: see fleetcore.video.set_opencv_threads)")
    ap.add_argument("--only", choices=("video", "stages"), default=None, help="run only the video or the curate-stages half")
    ap.add_argument("--fleet", default="2x1", metavar="VEHICLESxDRIVES",
                    help="the simulated fleet of the curate-stages half (default 2x1: 2 vehicles x 1 drive of 30 s, 20 s with --quick; 3 cameras)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "fleet-bench-videos")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    console = Console(width=200)
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    repeats = args.repeats or (2 if args.quick else 5)
    w, h = (int(x) for x in args.size.lower().split("x"))
    try:
        fleet = tuple(int(x) for x in args.fleet.lower().split("x"))
        if len(fleet) != 2 or min(fleet) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"--fleet: expected VEHICLESxDRIVES with positive numbers, e.g. 4x2; found {args.fleet!r}")

    args.cache.mkdir(parents=True, exist_ok=True)
    synth = args.cache / f"testsrc2_{w}x{h}_{args.fps:g}fps_{seconds:g}s_gop1s.mp4"
    if not synth.exists():
        console.log(f"encoding {synth.name} ...")
        tmp = synth.with_suffix(".tmp.mp4")
        encode_testsrc(tmp, seconds=seconds, fps=args.fps, size=(w, h), gop=int(round(args.fps)))
        tmp.replace(synth)
    videos = [("testsrc2", synth)]
    real = REPO.parent / "shared/data/real/video"
    for p in sorted(real.glob("*.mp4")) if real.is_dir() else []:
        videos.append((p.stem.replace("_", "-"), p))

    results = []
    set_opencv_threads(args.opencv_threads)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmpd:
        for name, path in videos if args.only != "stages" else []:
            console.log(f"benchmarking {name} ({path.name})")
            results.append(bench_video(name, path, Path(tmpd), threads=args.threads, repeats=repeats))
        stages = bench_curate_stages(Path(tmpd), quick=args.quick, repeats=repeats, console=console,
                                     vehicles=fleet[0], drives=fleet[1]) if args.only != "video" else None

    table = Table(title=f"fleetcore.video decode benchmark (decoder threads={args.threads}, OpenCV threads={args.opencv_threads}, max_side=640)")
    for col in ("video", "size", "frames", "GOP", "probe / index s", "ffmpeg fps", "PyAV fps",
                "every frame: ours fps", "ratio ffmpeg (>=0.8) best / median", "CPU/frame ffmpeg/ours",
                "10 Hz: ours fps", "ratio ffmpeg best / median", "sparse (10%) decoded", "sparse/full time (<=0.2)"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r["name"], f"{r['width']}x{r['height']}", str(r["frames"]), str(r["gop_frames"]), f"{r['probe_s']:.3f} / {r['index_s']:.3f}",
            f"{r['ffmpeg_decode_fps']:.0f}", f"{r['pyav_decode_fps']:.0f}",
            f"{r['full']['decoded_fps']:.0f}", f"{r['full_ratio_to_ffmpeg']:.2f} / {r['full_ratio_to_ffmpeg_median']:.2f}",
            f"{r['ffmpeg_cpu_ms_per_frame']:.2f}/{r['full']['cpu_ms_per_frame']:.2f} ms = {r['cpu_ratio_to_ffmpeg']:.2f}",
            f"{r['full_10hz']['decoded_fps']:.0f}", f"{r['full_10hz_ratio_to_ffmpeg']:.2f} / {r['full_10hz_ratio_to_ffmpeg_median']:.2f}",
            f"{r['sparse']['frames_decoded']}/{r['full']['frames_decoded']}", f"{r['sparse_time_ratio']:.2f}",
        )
    if results:
        console.print(table)
    if stages is not None:
        print_stages(console, stages)
    load = os.getloadavg()
    console.log(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    out = {"load_avg": list(load), "cpus": os.cpu_count(), "threads": args.threads, "opencv_threads": args.opencv_threads, "quick": args.quick, "repeats": repeats, "max_side": 640, "results": results, "curate_stages": stages}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
        console.log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
