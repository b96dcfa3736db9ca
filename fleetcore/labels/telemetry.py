"""Telemetry labels: manoeuvre (dominant + per-sample segments), speed band, road type, time of day.

Per-sample manoeuvres, in priority order (the same order the simulator's ground truth uses):

``stopped``           speed < 0.2 m/s
``lane_change_left``  an S-shaped yaw episode: a lobe of |yaw rate| > 0.012 rad/s (at > 5 m/s)
``lane_change_right`` followed within 0.8 s by an opposite lobe, 2-9 s in all, each lobe turning
                      0.02-0.35 rad, net heading change <= 0.4 x the larger lobe, dead-reckoned
                      lateral offset 1.5-6 m (sign: + = left)
``left_turn``         yaw rate >= 0.1 rad/s (yaw rate, steering and lateral accel are + = left)
``right_turn``        yaw rate <= -0.1 rad/s
``stopping``          a deceleration run (accel < -0.3 m/s^2) that ends at a standstill
``braking``           accel <= -1.0 m/s^2
``accelerating``      accel >= 1.0 m/s^2
``straight``          everything else

The yaw rate is taken, in order of preference, from the logged yaw rate, from the steering-wheel
angle (a bicycle model: yaw rate = speed x tan(steering / 15) / 2.8 m, steering ratio 15 and
wheelbase 2.8 m, typical of passenger cars), or from the heading (GPS course, smoothed over 1 s and
differentiated above 3 m/s: the course of a slow or stopped car is noise); where the longitudinal
acceleration is unknown it is the derivative of speed. Runs shorter than 0.3 s are
merged into the previous run. The clip's dominant manoeuvre is, among the event manoeuvres (not
``straight``/``stopped``) covering >= 1 s, the first in the order lane change > turn > stopping >
braking > accelerating (a stop-and-go clip is ``stopping`` even if its pull-away lasts longer),
else the more common of ``straight``/``stopped``.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Mapping

import numpy as np

from fleetcore.labels.base import LabelValue, register_labeller

MANOEUVRES = (
    "straight",
    "left_turn",
    "right_turn",
    "lane_change_left",
    "lane_change_right",
    "stopping",
    "stopped",
    "accelerating",
    "braking",
)
EVENT_MANOEUVRES = tuple(m for m in MANOEUVRES if m not in ("straight", "stopped"))

STOPPED_MPS = 0.2
TURN_YAW_RADPS = 0.1
ACCEL_MPS2 = 1.0
STOPPING_DECEL_MPS2 = 0.3
LC_YAW_RADPS = 0.012
LC_MIN_SPEED_MPS = 5.0
LC_GAP_S = 0.8
LC_DURATION_S = (2.0, 9.0)
LC_MAX_HEADING_RAD = 0.35  # per lobe
LC_MIN_LOBE_RAD = 0.02
LC_BALANCE = 0.4  # |net heading change| <= 0.4 x the larger lobe
LC_OFFSET_M = (1.5, 6.0)
MIN_RUN_S = 0.3

SPEED_BANDS_KMH = (("urban", 50.0), ("suburban", 80.0))  # below each limit; above the last: highway
SPEED_STOPPED_MPS = 0.5
DAY_DEG = 6.0
NIGHT_DEG = -6.0


def _dt_s(times_ns: np.ndarray) -> float:
    if len(times_ns) < 2:
        return 0.1
    return float(np.median(np.diff(times_ns.astype(np.int64)))) / 1e9


def _signal(telemetry: Mapping[str, np.ndarray], key: str, n: int) -> np.ndarray:
    v = telemetry.get(key)
    if v is None:
        return np.full(n, np.nan)
    return np.asarray(v, dtype=np.float64)


def _fill(v: np.ndarray) -> np.ndarray:
    """Interpolate NaN gaps (edges held); all-NaN stays all-NaN."""
    ok = np.isfinite(v)
    if ok.all() or not ok.any():
        return v
    idx = np.arange(len(v))
    return np.interp(idx, idx[ok], v[ok])


#: the bicycle model of _yaw_rate (steering-wheel angle -> yaw rate)
STEER_RATIO = 15.0
WHEELBASE_M = 2.8
HEADING_SMOOTH_S = 1.0


def _smooth(v: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` (odd) samples, the ends held (edge padding)."""
    if window <= 1 or len(v) < 3:
        return v
    half = window // 2
    return np.convolve(np.pad(v, half, mode="edge"), np.ones(window) / window, mode="valid")


def _yaw_rate(tel: Mapping[str, np.ndarray], speed: np.ndarray, dt_s: float) -> np.ndarray:
    """Yaw rate (rad/s, + = left): logged, else from the steering angle, else from the smoothed
    GPS course (see the module docstring)."""
    n = len(speed)
    yaw = _signal(tel, "yaw_rate_radps", n)
    if np.isfinite(yaw).sum() >= max(2, n // 2):
        return _fill(yaw)
    steer = _signal(tel, "steering_angle_rad", n)
    if np.isfinite(steer).sum() >= max(2, n // 2):
        return speed * np.tan(_fill(steer) / STEER_RATIO) / WHEELBASE_M
    heading = _signal(tel, "heading_rad", n)
    if np.isfinite(heading).sum() >= max(2, n // 2) and n >= 2:
        h = _smooth(np.unwrap(_fill(heading)), max(1, int(round(HEADING_SMOOTH_S / dt_s))) | 1)
        d = -np.gradient(h, dt_s)  # heading is clockwise; yaw rate is + = left
        d[~(speed > 3.0)] = 0.0
        return d
    return np.zeros(n)


def _accel(tel: Mapping[str, np.ndarray], speed: np.ndarray, dt_s: float) -> np.ndarray:
    n = len(speed)
    a = _signal(tel, "accel_lon_mps2", n)
    if np.isfinite(a).sum() >= max(2, n // 2):
        return _fill(a)
    if n >= 2:
        return np.gradient(speed, dt_s)
    return np.zeros(n)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of the True runs of a boolean array."""
    if not len(mask):
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _lane_changes(speed: np.ndarray, yaw: np.ndarray, dt_s: float) -> list[tuple[int, int, str]]:
    """S-shaped yaw episodes: a yaw lobe followed (within LC_GAP_S) by an opposite lobe of similar
    heading change, whose dead-reckoned lateral offset is about one lane. (An S-bend of the road
    looks the same in telemetry; a one-sided curve does not pair up.)"""
    moving = speed > LC_MIN_SPEED_MPS
    lobes = []
    for sign in (1.0, -1.0):
        for a, b in _runs((sign * yaw > LC_YAW_RADPS) & moving):
            lobes.append((a, b, sign, float(np.sum(yaw[a:b]) * dt_s)))
    lobes.sort()
    out = []
    gap = int(round(LC_GAP_S / dt_s))
    k = 0
    while k + 1 < len(lobes):
        a1, b1, s1, area1 = lobes[k]
        a2, b2, s2, area2 = lobes[k + 1]
        dur = (b2 - a1) * dt_s
        big = max(abs(area1), abs(area2))
        if (
            s1 != s2
            and a2 - b1 <= gap
            and LC_DURATION_S[0] <= dur <= LC_DURATION_S[1]
            and min(abs(area1), abs(area2)) >= LC_MIN_LOBE_RAD
            and abs(area1 + area2) <= LC_BALANCE * big
            and big <= LC_MAX_HEADING_RAD
        ):
            psi = np.cumsum(yaw[a1:b2]) * dt_s  # heading relative to the episode start, + = left
            offset = float(np.sum(speed[a1:b2] * np.sin(psi)) * dt_s)
            if LC_OFFSET_M[0] <= abs(offset) <= LC_OFFSET_M[1]:
                out.append((a1, b2, "lane_change_left" if offset > 0 else "lane_change_right"))
                k += 2
                continue
        k += 1
    return out


def manoeuvre_sequence(telemetry: Mapping[str, np.ndarray], sample_times_ns: np.ndarray) -> list[str]:
    """Per-sample manoeuvre labels (see the module docstring). Unknown speed -> ``straight``."""
    n = len(sample_times_ns)
    if n == 0:
        return []
    dt_s = _dt_s(sample_times_ns)
    speed = _fill(_signal(telemetry, "speed_mps", n))
    if not np.isfinite(speed).any():
        return ["straight"] * n
    yaw = _yaw_rate(telemetry, speed, dt_s)
    acc = _accel(telemetry, speed, dt_s)
    if n >= 3:  # 3-tap median against single-sample spikes
        acc = np.median(np.stack([np.r_[acc[0], acc[:-1]], acc, np.r_[acc[1:], acc[-1]]]), axis=0)
    lab = np.array(["straight"] * n, dtype=object)
    lab[acc >= ACCEL_MPS2] = "accelerating"
    lab[acc <= -ACCEL_MPS2] = "braking"
    stopped = speed < STOPPED_MPS
    for a, b in _runs(acc < -STOPPING_DECEL_MPS2):
        # a deceleration run that reaches (or runs into) a standstill
        end = min(n, b + int(round(1.0 / dt_s)) + 1)
        if stopped[a:end].any() and not stopped[a]:
            lab[a:b] = "stopping"
    lab[yaw >= TURN_YAW_RADPS] = "left_turn"
    lab[yaw <= -TURN_YAW_RADPS] = "right_turn"
    for a, b, kind in _lane_changes(speed, yaw, dt_s):
        lab[a:b] = kind
    lab[stopped] = "stopped"
    # merge runs shorter than MIN_RUN_S into the previous run
    min_len = max(1, int(round(MIN_RUN_S / dt_s)))
    out = lab.tolist()
    segs = segments(out)
    merged: list[list[Any]] = []
    for v, a, b in segs:
        if merged and (b - a < min_len or merged[-1][0] == v):
            merged[-1][2] = b
        else:
            merged.append([v, a, b])
    res: list[str] = []
    for v, a, b in merged:
        res.extend([v] * (b - a))
    return res


def segments(seq: list[str]) -> list[list[Any]]:
    """Run-length segments ``[label, start, end)`` of a per-sample sequence."""
    out: list[list[Any]] = []
    for i, v in enumerate(seq):
        if out and out[-1][0] == v:
            out[-1][2] = i + 1
        else:
            out.append([v, i, i + 1])
    return out


#: which event manoeuvre names a clip that has several (each covering >= DOMINANT_MIN_S)
DOMINANT_PRIORITY = ("lane_change_left", "lane_change_right", "left_turn", "right_turn", "stopping", "braking", "accelerating")
DOMINANT_MIN_S = 1.0


def dominant_manoeuvre(seq: list[str], dt_s: float) -> str:
    """The highest-priority event manoeuvre (DOMINANT_PRIORITY) covering >= 1 s of the clip (ties
    within one priority level: more samples), else the more common of straight/stopped."""
    if not seq:
        return "straight"
    counts = {m: seq.count(m) for m in MANOEUVRES}
    events = [m for m in DOMINANT_PRIORITY if counts[m] * dt_s >= DOMINANT_MIN_S]
    if events:
        rank = {m: i // 2 if i < 4 else i - 2 for i, m in enumerate(DOMINANT_PRIORITY)}
        return min(events, key=lambda m: (rank[m], -counts[m], m))
    return "stopped" if counts["stopped"] > counts["straight"] else "straight"


def speed_band(mean_speed_mps: float) -> str:
    if not math.isfinite(mean_speed_mps):
        return "unknown"
    if mean_speed_mps < SPEED_STOPPED_MPS:
        return "stopped"
    kmh = mean_speed_mps * 3.6
    for name, limit in SPEED_BANDS_KMH:
        if kmh < limit:
            return name
    return "highway"


def road_type(speed: np.ndarray) -> str:
    """urban / rural / highway guessed from the clip's speed profile (weak on short clips)."""
    v = speed[np.isfinite(speed)]
    if not len(v):
        return "unknown"
    p90 = float(np.percentile(v, 90)) * 3.6
    slow = float(np.mean(v < 2.0))
    if p90 >= 85.0 and slow < 0.05:
        return "highway"
    if p90 < 55.0 or slow > 0.2:
        return "urban"
    return "rural"


def sun_elevation_deg(lat_deg: float, lon_deg: float, utc_ns: int) -> float:
    from astral import Observer
    from astral.sun import elevation

    when = dt.datetime.fromtimestamp(utc_ns / 1e9, tz=dt.timezone.utc)
    return float(elevation(Observer(latitude=lat_deg, longitude=lon_deg), when))


def time_of_day(elevation_deg: float | None) -> str:
    if elevation_deg is None or not math.isfinite(elevation_deg):
        return "unknown"
    if elevation_deg > DAY_DEG:
        return "day"
    if elevation_deg < NIGHT_DEG:
        return "night"
    return "dusk_dawn"


def clip_sun(telemetry: Mapping[str, np.ndarray], sample_times_ns: np.ndarray, start_utc_ns: int) -> tuple[str, float | None]:
    """(time_of_day, sun elevation in degrees) at the clip's middle and median GPS position."""
    n = len(sample_times_ns)
    lat = _signal(telemetry, "lat_deg", n)
    lon = _signal(telemetry, "lon_deg", n)
    ok = np.isfinite(lat) & np.isfinite(lon)
    if not ok.any():
        return "unknown", None
    mid_ns = int(start_utc_ns)
    if n:
        t = sample_times_ns.astype(np.int64)
        mid_ns += int((t[-1] - t[0]) // 2)
    el = sun_elevation_deg(float(np.median(lat[ok])), float(np.median(lon[ok])), mid_ns)
    return time_of_day(el), el


@register_labeller
class TelemetryLabeller:
    name = "telemetry"
    version = "1"
    reads_frames = False  # labels telemetry-only clips too

    def label(self, clip: Any, telemetry: Mapping[str, np.ndarray], *, start_utc_ns: int) -> dict[str, LabelValue]:
        times = np.asarray(clip.sample_times_ns, dtype=np.int64)
        n = len(times)
        dt_s = _dt_s(times)
        speed = _signal(telemetry, "speed_mps", n)
        seq = manoeuvre_sequence(telemetry, times)
        known = np.isfinite(speed).any()
        mean = float(np.nanmean(speed)) if known else float("nan")
        tod, el = clip_sun(telemetry, times, start_utc_ns)
        return {
            "manoeuvre": dominant_manoeuvre(seq, dt_s) if known else "unknown",
            "manoeuvre_segments": segments(seq) if known else [],
            "speed_band": speed_band(mean),
            "speed_mean_mps": mean,
            "speed_max_mps": float(np.nanmax(speed)) if known else float("nan"),
            "road_type": road_type(speed),
            "time_of_day": tod,
            "sun_elevation_deg": float("nan") if el is None else el,
        }
