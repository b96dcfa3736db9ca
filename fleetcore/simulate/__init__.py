"""Synthetic fleet simulator: writes landing drives (video + telemetry + ground truth).

``simulate_fleet`` writes ``vehicles x drives_per_vehicle`` drives; ``simulate_drive`` writes one.
Each drive: ``cameras/<cam>/NNN.mp4`` (H.264, one file per camera or consecutive segments of
``segment_s``), ``telemetry.parquet`` (canonical TELEMETRY at ``telemetry_hz``),
``ground_truth.json`` (events, conditions, manoeuvres; see :mod:`fleetcore.simulate.scenario`
for the event thresholds), ``manifest.json`` and, last, ``_UPLOAD_COMPLETE``.

Clocks: the vehicle clock of a drive starts at a random boot offset (20-600 s); telemetry starts
there, every camera starts 100 ms later plus its own 0-60 ms skew (recorded as ``start_ns``).
``utc_offset_ns`` puts the drive on ``start_date + drive_index`` days (UTC) at a time of day whose
solar elevation (astral) at the drive's GPS position matches the drive's ``time_of_day``.
Frames carry a 16-bit marker of their vehicle-clock time (see :mod:`fleetcore.simulate.render`).
Same arguments and seed -> byte-identical files.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import math
import multiprocessing
import os
import shutil
from typing import Any, Callable, Literal, Sequence

import numpy as np

from fleetcore.landing.drives import CAMERA_RE, DriveRef, DriveWriter
from fleetcore.simulate.encode import H264Writer
from fleetcore.simulate.render import (
    DEFAULT_CAMERA_ORDER,
    CameraRenderer,
    FrameState,
    OtherVehicle,
    PedestrianGroup,
    camera_spec,
    decode_marker,
    marker_value,
)
from fleetcore.simulate.scenario import (
    EVENT_TYPES,
    TIMES_OF_DAY,
    Scenario,
    _intervals,
    _stable_hash,
    assign_events,
    build_scenario,
)

__all__ = [
    "simulate_fleet",
    "simulate_drive",
    "plan_fleet",
    "camera_names",
    "decode_marker",
    "marker_value",
    "EVENT_TYPES",
    "CAMERA_EFFECTS",
]

log = logging.getLogger(__name__)

CAMERA_EFFECTS = ("camera_blocked", "camera_blurred")
TimeOfDay = Literal["day", "dusk", "night"]
VIDEO_LEAD_S = 0.1


def camera_names(cameras: int | Sequence[str]) -> list[str]:
    """Camera names: an explicit list, or the first N of front, left, right, rear, front_wide,
    front_narrow, left_repeater, right_repeater."""
    if isinstance(cameras, int):
        if not 1 <= cameras <= len(DEFAULT_CAMERA_ORDER):
            raise ValueError(f"cameras={cameras}: expected 1..{len(DEFAULT_CAMERA_ORDER)} or a list of names")
        return list(DEFAULT_CAMERA_ORDER[:cameras])
    names = list(cameras)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"cameras={names!r}: expected a non-empty list of distinct names")
    bad = [c for c in names if not CAMERA_RE.match(c)]
    if bad:
        raise ValueError(f"camera names {bad!r}: expected lowercase letters, digits, '_' or '-' (at most 32)")
    return names


def simulate_fleet(
    root: str | os.PathLike[str],
    *,
    vehicles: int = 3,
    drives_per_vehicle: int = 2,
    cameras: int | Sequence[str] = 4,
    width: int = 640,
    height: int = 360,
    fps: float = 20.0,
    duration_s: float = 30.0,
    telemetry_hz: float = 50.0,
    seed: int = 0,
    start_date: str = "2026-11-20",
    segment_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    crf: int = 26,
    threads: int = 1,
    workers: int | None = None,
) -> list[DriveRef]:
    """Write ``vehicles * drives_per_vehicle`` drives under ``root``; return their refs.

    Vehicles are ``veh-000``, ``veh-001``, ...; drive ``j`` of a vehicle falls on ``start_date + j``
    days (UTC). Event types, times of day (day/dusk/night) and camera effects (blocked/blurred)
    are dealt over the fleet so that, where the drives are long enough, every kind occurs.
    ``progress(done, total)`` is called after each drive. ``workers`` processes simulate drives in
    parallel (None: one per CPU; 1: in this process); the output does not depend on it.
    """
    jobs = _fleet_jobs(
        root, vehicles=vehicles, drives_per_vehicle=drives_per_vehicle, cameras=cameras, width=width, height=height,
        fps=fps, duration_s=duration_s, telemetry_hz=telemetry_hz, seed=seed, start_date=start_date,
        segment_s=segment_s, overwrite=overwrite, crf=crf, threads=threads,
    )
    n = len(jobs)
    n_workers = min(n, workers if workers is not None else (os.cpu_count() or 1))
    results: list[tuple[DriveRef, set[str]] | None] = [None] * n
    if n_workers <= 1:
        for k, job in enumerate(jobs):
            results[k] = _simulate_drive(**job)
            if progress is not None:
                progress(k + 1, n)
    else:
        # never fork this process: a caller with threads (a test runner, onnxruntime, a Dask client) can
        # hold a lock at the fork that no thread of the child ever releases, and the pool hangs
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            futs = {pool.submit(_simulate_job, job): k for k, job in enumerate(jobs)}
            done = 0
            for fut in concurrent.futures.as_completed(futs):
                results[futs[fut]] = fut.result()
                done += 1
                if progress is not None:
                    progress(done, n)
    refs: list[DriveRef] = []
    covered: set[str] = set()
    for res in results:
        assert res is not None
        refs.append(res[0])
        covered.update(res[1])
    missing = [e for e in EVENT_TYPES if e not in covered]
    if missing:
        log.warning("fleet of %d drives of %.1f s does not cover event types %s", n, duration_s, missing)
    return refs


def _fleet_jobs(
    root: str | os.PathLike[str],
    *,
    vehicles: int,
    drives_per_vehicle: int,
    cameras: int | Sequence[str],
    width: int,
    height: int,
    fps: float,
    duration_s: float,
    telemetry_hz: float,
    seed: int,
    start_date: str,
    segment_s: float | None,
    overwrite: bool,
    crf: int,
    threads: int,
) -> list[dict[str, Any]]:
    """Keyword arguments of ``_simulate_drive`` for every drive of the fleet (events, times of day
    and camera effects dealt over the drives)."""
    n = vehicles * drives_per_vehicle
    rng = np.random.default_rng([seed, 99])
    plan = assign_events(n, duration_s, rng)
    offset = int(rng.integers(0, 3))
    perm = rng.permutation(n)
    effects: list[list[str]] = [[] for _ in range(n)]
    for j, eff in enumerate(CAMERA_EFFECTS):
        if j < n:
            effects[int(perm[j])].append(eff)
    for k in range(n):
        if not effects[k] and rng.random() < 0.3:
            effects[k].append(CAMERA_EFFECTS[int(rng.integers(0, 2))])
    jobs: list[dict[str, Any]] = []
    for k in range(n):
        v, j = divmod(k, drives_per_vehicle)
        jobs.append(dict(
            root=root,
            vehicle_id=f"veh-{v:03d}",
            drive_id=None,
            drive_index=j,
            cameras=cameras,
            width=width,
            height=height,
            fps=fps,
            duration_s=duration_s,
            telemetry_hz=telemetry_hz,
            seed=seed,
            start_date=start_date,
            segment_s=segment_s,
            events=plan[k],
            time_of_day=TIMES_OF_DAY[(k + offset) % 3],
            effects=effects[k],
            overwrite=overwrite,
            crf=crf,
            threads=threads,
        ))
    return jobs


def plan_fleet(
    *, vehicles: int = 3, drives_per_vehicle: int = 2, duration_s: float = 30.0, telemetry_hz: float = 50.0,
    seed: int = 0, start_date: str = "2026-11-20",
) -> list[Scenario]:
    """The scenarios (telemetry + ground-truth events) ``simulate_fleet`` would write, without rendering."""
    out = []
    for job in _fleet_jobs(
        "", vehicles=vehicles, drives_per_vehicle=drives_per_vehicle, cameras=1, width=64, height=36, fps=1.0,
        duration_s=duration_s, telemetry_hz=telemetry_hz, seed=seed, start_date=start_date, segment_s=None,
        overwrite=False, crf=26, threads=1,
    ):
        out.append(
            build_scenario(
                vehicle_id=job["vehicle_id"], drive_index=job["drive_index"], seed=seed, duration_s=duration_s,
                telemetry_hz=telemetry_hz,
                start_date=dt.date.fromisoformat(start_date) + dt.timedelta(days=job["drive_index"]),
                time_of_day=job["time_of_day"], events=job["events"], video_lead_s=VIDEO_LEAD_S,
            )
        )
    return out


def _simulate_job(job: dict[str, Any]) -> tuple[DriveRef, set[str]]:
    return _simulate_drive(**job)


def simulate_drive(
    root: str | os.PathLike[str],
    vehicle_id: str,
    drive_id: str | None = None,
    *,
    drive_index: int = 0,
    cameras: int | Sequence[str] = 4,
    width: int = 640,
    height: int = 360,
    fps: float = 20.0,
    duration_s: float = 30.0,
    telemetry_hz: float = 50.0,
    seed: int = 0,
    start_date: str = "2026-11-20",
    segment_s: float | None = None,
    events: Sequence[str] | None = None,
    time_of_day: TimeOfDay | None = None,
    effects: Sequence[str] | None = None,
    pedestrians: bool | None = None,
    overwrite: bool = False,
    crf: int = 26,
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> DriveRef:
    """Write one drive under ``root/vehicle_id/<drive_id>``.

    ``drive_id`` None -> ``<vehicle_id>-<UTC start %Y%m%dT%H%M%SZ>``. ``events`` forces the
    injected event types (None: 2-4 random ones that fit); ``time_of_day`` forces day/dusk/night
    (None: random); ``effects`` lists camera effects ("camera_blocked", "camera_blurred"; None:
    random, [] none); ``pedestrians`` None: random groups, False: none, True: at least one group.
    ``progress(done_frames, total_frames)`` is called every second of video.
    """
    return _simulate_drive(
        root, vehicle_id, drive_id, drive_index=drive_index, cameras=cameras, width=width, height=height, fps=fps,
        duration_s=duration_s, telemetry_hz=telemetry_hz, seed=seed, start_date=start_date, segment_s=segment_s,
        events=events, time_of_day=time_of_day, effects=effects, pedestrians=pedestrians, overwrite=overwrite,
        crf=crf, threads=threads, progress=progress,
    )[0]


def _simulate_drive(
    root: str | os.PathLike[str],
    vehicle_id: str,
    drive_id: str | None,
    *,
    drive_index: int,
    cameras: int | Sequence[str],
    width: int,
    height: int,
    fps: float,
    duration_s: float,
    telemetry_hz: float,
    seed: int,
    start_date: str,
    segment_s: float | None,
    events: Sequence[str] | None,
    time_of_day: TimeOfDay | None,
    effects: Sequence[str] | None,
    pedestrians: bool | None = None,
    overwrite: bool = False,
    crf: int = 26,
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[DriveRef, set[str]]:
    if width < 64 or height < 36 or width % 2 or height % 2:
        raise ValueError(f"{width}x{height}: expected even width >= 64 and even height >= 36")
    if fps <= 0 or telemetry_hz <= 0 or duration_s <= 0:
        raise ValueError("fps, telemetry_hz and duration_s must be positive")
    if segment_s is not None and segment_s <= 0:
        raise ValueError(f"segment_s={segment_s}: expected a positive number of seconds or None")
    cams = camera_names(cameras)
    date = dt.date.fromisoformat(start_date) + dt.timedelta(days=drive_index)
    rng = np.random.default_rng([seed, drive_index, _stable_hash(vehicle_id), 11])
    if events is None:
        pool = [e for e in EVENT_TYPES if e not in ("stop_and_go", "high_speed")]
        k = int(rng.integers(2, 5))
        events = [pool[int(i)] for i in rng.choice(len(pool), size=k, replace=False)]
        if rng.random() < 0.3:
            events = [("stop_and_go", "high_speed")[int(rng.integers(0, 2))]] + events[:2]
    sc = build_scenario(
        vehicle_id=vehicle_id,
        drive_index=drive_index,
        seed=seed,
        duration_s=duration_s,
        telemetry_hz=telemetry_hz,
        start_date=date,
        time_of_day=time_of_day,
        events=events,
        video_lead_s=VIDEO_LEAD_S,
    )
    did = drive_id or sc.drive_id
    w = DriveWriter(root, vehicle_id, did, overwrite=overwrite)
    if overwrite and (w.path / "cameras").is_dir():
        shutil.rmtree(w.path / "cameras")  # stale segments of an earlier run of this drive

    # ---- camera timing
    n_frames = int(round(duration_s * fps))
    period_ns = 1e9 / fps
    t0 = int(sc.t_ns[0])
    cam_start = {c: t0 + int(VIDEO_LEAD_S * 1e9) + (int(rng.integers(0, 61)) * 1_000_000 if i else int(rng.integers(0, 21)) * 1_000_000) for i, c in enumerate(cams)}
    per_seg = n_frames if segment_s is None else max(1, int(round(segment_s * fps)))
    frame_t = {c: cam_start[c] + np.round(np.arange(n_frames) * period_ns).astype(np.int64) for c in cams}

    # ---- scene content
    vehicles = _other_vehicles(rng)
    peds = _pedestrian_groups(rng, sc, pedestrians)
    if effects is None:
        effects = [CAMERA_EFFECTS[int(rng.integers(0, 2))]] if rng.random() < 0.4 else []
    cam_effects: list[dict[str, Any]] = []
    vid_len = duration_s
    for eff in effects:
        if eff not in CAMERA_EFFECTS:
            raise ValueError(f"effect {eff!r}: expected one of {list(CAMERA_EFFECTS)}")
        cam = cams[int(rng.integers(0, len(cams)))]
        length = min(float(rng.uniform(2.0, 4.0)), 0.5 * vid_len)
        a = float(rng.uniform(0.1 * vid_len, max(0.1 * vid_len, 0.9 * vid_len - length)))
        ts = frame_t[cam]
        sel = np.flatnonzero((ts >= cam_start[cam] + a * 1e9) & (ts <= cam_start[cam] + (a + length) * 1e9))
        if len(sel):
            cam_effects.append({"type": eff, "camera": cam, "i0": int(sel[0]), "i1": int(sel[-1]), "seed": int(rng.integers(0, 1 << 30))})

    renderers = {c: CameraRenderer(camera_spec(c), width, height, sc.time_of_day) for c in cams}
    t_s_arr = (sc.t_ns - t0) / 1e9
    ped_vis: dict[tuple[str, int], np.ndarray] = {(c, g): np.zeros(n_frames, bool) for c in cams for g in range(len(peds))}

    files: dict[str, list[dict[str, Any]]] = {c: [] for c in cams}
    writers: dict[str, H264Writer] = {}
    try:
        for i in range(n_frames):
            if i % per_seg == 0:
                for c in cams:
                    if c in writers:
                        writers.pop(c).close()
                    rel = f"cameras/{c}/{i // per_seg:03d}.mp4"
                    writers[c] = H264Writer(w.file(rel), width=width, height=height, fps=fps, crf=crf, threads=threads)
                    files[c].append({"path": rel, "start_ns": int(frame_t[c][i]), "frame_times": None})
            for c in cams:
                t = float(frame_t[c][i])
                ts = (t - t0) / 1e9
                st = FrameState(
                    t_s=ts,
                    distance_m=float(np.interp(ts, t_s_arr, sc.distance_m)),
                    road_k=float(np.interp(ts, t_s_arr, sc.road_curvature)),
                    lane_offset_m=float(np.interp(ts, t_s_arr, sc.lane_offset_m)),
                    speed=float(np.interp(ts, t_s_arr, sc.speed)),
                )
                eff_now, eff_seed = None, 0
                for ce in cam_effects:
                    if ce["camera"] == c and ce["i0"] <= i <= ce["i1"]:
                        eff_now, eff_seed = ce["type"], ce["seed"]
                r = renderers[c]
                for g, grp in enumerate(peds):
                    if r.pedestrians_visible(st, grp):
                        ped_vis[(c, g)][i] = True
                writers[c].write(r.render(st, vehicles, peds, eff_now, eff_seed, marker_value(int(frame_t[c][i]))))
            if progress is not None and (i + 1) % max(1, int(round(fps))) == 0:
                progress(i + 1, n_frames)
        for c in list(writers):
            writers.pop(c).close()
    finally:
        for wr in writers.values():
            wr.abort()

    w.write_telemetry(sc.table)

    # ---- ground truth
    conditions: list[dict[str, Any]] = [
        {"type": "time_of_day", "value": sc.time_of_day, "start_ns": int(sc.t_ns[0]), "end_ns": int(sc.t_ns[-1])}
    ]
    for ce in cam_effects:
        ts = frame_t[ce["camera"]]
        conditions.append({"type": ce["type"], "camera": ce["camera"], "start_ns": int(ts[ce["i0"]]), "end_ns": int(ts[ce["i1"]])})
    for (c, g), vis in sorted(ped_vis.items()):
        for a, b in _intervals(vis):
            if b - a + 1 >= 2:
                conditions.append({"type": "pedestrians", "camera": c, "count": peds[g].count, "start_ns": int(frame_t[c][a]), "end_ns": int(frame_t[c][b])})
    conditions.sort(key=lambda x: (x["start_ns"], x["type"], x.get("camera", "")))
    gt = {
        "vehicle_id": vehicle_id,
        "drive_id": did,
        "seed": seed,
        "utc_offset_ns": sc.utc_offset_ns,
        "city": sc.city,
        "events": sc.events,
        "conditions": conditions,
        "manoeuvres": sc.manoeuvres,
    }
    w.write_json("ground_truth.json", gt)
    manifest = {
        "format_version": 1,
        "vehicle_id": vehicle_id,
        "drive_id": did,
        "utc_offset_ns": sc.utc_offset_ns,
        "cameras": [{"name": c, "codec": "h264", "files": files[c]} for c in cams],
        "telemetry": {"path": "telemetry.parquet", "format": "parquet"},
        "source": "simulator",
        "notes": None,
    }
    w.finish(manifest)
    log.info("simulated %s/%s: %d cameras x %d frames, events %s", vehicle_id, did, len(cams), n_frames, [e["type"] for e in sc.events])
    return DriveRef(str(root), vehicle_id, did, True), {e["type"] for e in sc.events}


def _other_vehicles(rng: np.random.Generator) -> list[OtherVehicle]:
    palette = [(40, 40, 180), (180, 180, 180), (30, 30, 30), (160, 90, 30), (220, 220, 225), (40, 120, 40), (60, 60, 120)]
    out = []
    for _ in range(int(rng.integers(4, 7))):
        z0 = float(rng.uniform(15.0, 70.0)) * (1 if rng.random() < 0.7 else -0.6)
        out.append(
            OtherVehicle(
                lane=int(rng.integers(-2, 3)),
                z0=z0,
                amp=float(rng.uniform(2.0, 6.0)),
                period_s=float(rng.uniform(15.0, 40.0)),
                phase=float(rng.uniform(0, 2 * math.pi)),
                color=palette[int(rng.integers(0, len(palette)))],
            )
        )
    return out


def _pedestrian_groups(rng: np.random.Generator, sc: Scenario, want: bool | None) -> list[PedestrianGroup]:
    if want is False:
        return []
    n = int(rng.integers(0, 4))
    if want:
        n = max(n, 1)
    d_end = float(sc.distance_m[-1])
    out = []
    for _ in range(n):
        s = float(rng.uniform(40.0, max(41.0, d_end + 10.0)))
        side = 1.0 if rng.random() < 0.5 else -1.0
        cnt = int(rng.integers(1, 4))
        cols = [tuple(int(x) for x in rng.integers(30, 230, size=3)) for _ in range(cnt)]
        out.append(PedestrianGroup(s_m=s, q_m=side * float(rng.uniform(9.8, 11.5)), count=cnt, colors=cols))
    return out
