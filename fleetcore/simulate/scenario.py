"""Scenario generation for the synthetic fleet: telemetry, injected events and ground truth.

All times are vehicle-clock nanoseconds. The ego vehicle is driven by two control profiles
sampled at the telemetry rate: longitudinal acceleration ``a(t)`` and path curvature ``k(t)``.
Speed is the integral of ``a``; the steering-wheel angle follows from the kinematic bicycle
model (``steer = STEERING_RATIO * atan(WHEELBASE_M * k)``), the yaw rate is
``v * tan(steer / STEERING_RATIO) / WHEELBASE_M`` (= ``v * k``), the lateral acceleration is
``v * yaw_rate``; heading (clockwise from north) integrates ``-yaw_rate`` and the GPS track
integrates speed along the heading.

Sign conventions: steering, yaw rate and lateral acceleration are positive to the LEFT.

Event definitions and ground-truth thresholds
---------------------------------------------
Each event's ``start_ns``/``end_ns`` in ``ground_truth.json`` is measured on the *written*
telemetry (first and last sample meeting the condition), so a trigger using these thresholds
should reproduce it exactly:

=====================  ==========================================================================
hard_brake             ``accel_lon_mps2 <= -4.5`` (designed: -5.5 .. -7 m/s^2 held 0.6-1.0 s;
                       the interval where the threshold is met lasts >= 0.5 s)
harsh_acceleration         ``accel_lon_mps2 >= +3.0`` (designed: +3.4 .. +4.2 held 0.7-1.1 s)
sharp_turn             ``|accel_lat_mps2| >= 4.0`` (designed 4.6 .. 6.0 m/s^2 at 9-12.5 m/s, so the
                       yaw rate is also >= 0.3 rad/s); params.direction left|right
lane_change_left/right whole S-curve: lateral offset of one lane (3.5 m) in 3.5-4.5 s, sinusoidal
                       lateral acceleration with |peak| <= 1.8 m/s^2 (below the sharp-turn level)
stop_and_go            from the start of braking (from 8.5-11 m/s, about -2.5 m/s^2) through the
                       standstill (``speed_mps < 0.1`` for 2.0-3.5 s) to the end of the pull-away
                       (back to ~9 m/s); params.stop_start_ns/stop_end_ns give the standstill
high_speed             ``speed_mps > 33.0`` (about 120 km/h) for >= 3 s
disengagement          instant: ``driver_assist_engaged`` goes true -> false; start_ns == end_ns ==
                       time of the first false sample
shadow_disagreement    ``|shadow_steering_angle_rad - steering_angle_rad| > 0.35`` for >= 0.5 s
gps_glitch             samples whose lat/lon jump > 200 m off the true track (params.kind "jump",
                       jump 250-800 m, 3-8 samples) or are null (params.kind "dropout", 5-25 samples)
=====================  ==========================================================================

Outside events the driving is gentle: ``|accel_lon| < 1.6`` m/s^2, ``|accel_lat| < 1.1`` m/s^2,
``|yaw_rate| < 0.05`` rad/s, speed 8-28 m/s, ``|shadow - steering| < 0.05`` rad, no GPS jump
(consecutive fixes differ by speed*dt), and ``driver_assist_engaged`` only ever goes
false -> true. Events are separated by >= 4 s (gap between event windows), the first starts
>= 3 s into the drive and the last ends >= 2.5 s before its end.

Manoeuvres (``ground_truth.json`` "manoeuvres") partition the drive, per sample, in priority
order: ``stopped`` (speed < 0.1), ``lane_change_*`` (inside those events), ``left_turn`` /
``right_turn`` (|yaw_rate| >= 0.1 rad/s), ``stopping`` (braking phase of stop_and_go),
``braking`` (accel <= -1.0), ``accelerating`` (accel >= 1.0), else ``straight``; runs shorter
than 0.3 s are merged into the previous run.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

EVENT_TYPES: tuple[str, ...] = (
    "hard_brake",
    "harsh_acceleration",
    "sharp_turn",
    "lane_change_left",
    "lane_change_right",
    "stop_and_go",
    "high_speed",
    "disengagement",
    "shadow_disagreement",
    "gps_glitch",
)

# Ground-truth thresholds (see module docstring).
HARD_BRAKE_MPS2 = -4.5
HARSH_ACCEL_MPS2 = 3.0
SHARP_TURN_LAT_MPS2 = 4.0
SHARP_TURN_YAW_RADPS = 0.3
HIGH_SPEED_MPS = 33.0
SHADOW_DISAGREE_RAD = 0.35
GPS_JUMP_M = 200.0
STOPPED_MPS = 0.1
LANE_WIDTH_M = 3.5

# Gentle-driving limits outside events.
GENTLE_ACCEL = 1.2
GENTLE_LAT = 1.0
GENTLE_YAW = 0.04
MIN_GAP_S = 4.0
LEAD_S = 3.0
TAIL_S = 2.5

WHEELBASE_M = 2.8
STEERING_RATIO = 15.0
EARTH_R = 6_371_000.0

CITIES: tuple[tuple[str, float, float], ...] = (
    ("san_francisco", 37.7749, -122.4194),
    ("munich", 48.1372, 11.5756),
    ("tokyo", 35.6812, 139.7671),
    ("sydney", -33.8688, 151.2093),
    ("austin", 30.2672, -97.7431),
    ("stockholm", 59.3293, 18.0686),
)

TIMES_OF_DAY = ("day", "dusk", "night")


# --------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------
@dataclass
class Phase:
    kind: str  # "gap" or an event type
    i0: int  # first sample index
    i1: int  # one past the last sample index
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    """A simulated drive before rendering: per-sample arrays on the vehicle clock."""

    vehicle_id: str
    drive_id: str
    seed: int
    hz: float
    t_ns: np.ndarray  # int64
    speed: np.ndarray
    accel: np.ndarray
    curvature: np.ndarray  # path curvature (1/m), positive left
    road_curvature: np.ndarray  # curvature of the road itself (excludes lane changes)
    lane_offset_m: np.ndarray  # ego lateral position, positive left of the road centre
    distance_m: np.ndarray
    table: pa.Table  # canonical telemetry
    phases: list[Phase]
    events: list[dict[str, Any]]
    manoeuvres: list[dict[str, Any]]
    time_of_day: str
    utc_offset_ns: int
    city: str
    lat0: float
    lon0: float

    def at(self, arr: np.ndarray, t_ns: float) -> float:
        return float(np.interp(t_ns, self.t_ns, arr))


# --------------------------------------------------------------------------------------
# Profile helpers
# --------------------------------------------------------------------------------------
def _trapezoid(n_ramp: int, n_hold: int) -> np.ndarray:
    up = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, n_ramp + 2)[1:-1]) if n_ramp > 0 else np.zeros(0)
    return np.concatenate([up, np.ones(n_hold), up[::-1]])


def _speed_change(dv: float, a_max: float, dt: float, ramp_s: float = 0.4) -> np.ndarray:
    """Accel samples (smooth trapezoid, |a| <= a_max) whose integral is exactly ``dv``."""
    if abs(dv) < 1e-9:
        return np.zeros(0)
    n_ramp = max(1, int(round(ramp_s / dt)))
    # area of the shape ~ (n_hold + n_ramp) samples
    n_hold = max(0, int(math.ceil(abs(dv) / (a_max * dt))) - n_ramp)
    shape = _trapezoid(n_ramp, n_hold)
    amp = dv / (dt * shape.sum())
    return amp * shape


def _speed_change_len(dv: float, a_max: float, dt: float, ramp_s: float = 0.4) -> int:
    return len(_speed_change(dv, a_max, dt, ramp_s))


# --------------------------------------------------------------------------------------
# Event design: each returns (accel samples, curvature-rate samples or None, lateral
# accel target samples or None, params)
# --------------------------------------------------------------------------------------
def _v_pre_range(kind: str, params: dict[str, Any]) -> tuple[float, float]:
    if kind == "hard_brake":
        dv = params["decel"] * (params["hold_s"] + 0.35)
        return max(17.0, 9.5 + dv), 26.5
    if kind == "harsh_acceleration":
        dv = params["accel"] * (params["hold_s"] + 0.35)
        return 10.0, min(22.0, 26.5 - dv)
    if kind == "sharp_turn":
        return 9.0, 12.5
    if kind in ("lane_change_left", "lane_change_right"):
        return 13.0, 26.0
    if kind == "stop_and_go":
        return 8.5, 11.0
    if kind == "high_speed":
        return 26.0, 27.0
    return 10.0, 26.0


def _event_params(kind: str, rng: np.random.Generator, hz: float) -> dict[str, Any]:
    if kind == "hard_brake":
        return {"decel": float(rng.uniform(5.5, 7.0)), "hold_s": float(rng.uniform(0.6, 1.0))}
    if kind == "harsh_acceleration":
        return {"accel": float(rng.uniform(3.4, 4.2)), "hold_s": float(rng.uniform(0.7, 1.1))}
    if kind == "sharp_turn":
        return {
            "lat": float(rng.uniform(4.6, 6.0)),
            "direction": "left" if rng.random() < 0.5 else "right",
            "heading_change_rad": float(rng.uniform(0.9, 1.5)),
        }
    if kind in ("lane_change_left", "lane_change_right"):
        return {"duration_s": float(rng.uniform(3.5, 4.5))}
    if kind == "stop_and_go":
        return {"stand_s": float(rng.uniform(2.3, 3.5)), "v_after": float(rng.uniform(9.0, 10.0))}
    if kind == "high_speed":
        return {"v_peak": float(rng.uniform(35.0, 36.5)), "hold_s": float(rng.uniform(1.5, 2.5))}
    if kind == "disengagement":
        return {}
    if kind == "shadow_disagreement":
        return {
            "offset_rad": float(rng.uniform(0.5, 0.8)) * (1 if rng.random() < 0.5 else -1),
            "hold_s": float(rng.uniform(0.7, 1.3)),
        }
    if kind == "gps_glitch":
        if rng.random() < 0.7:
            return {
                "kind": "jump",
                "samples": int(rng.integers(3, 9)),
                "jump_m": float(rng.uniform(250.0, 800.0)),
                "bearing_rad": float(rng.uniform(0, 2 * math.pi)),
            }
        return {"kind": "dropout", "samples": int(rng.integers(5, 26))}
    raise ValueError(f"unknown event type {kind!r}; expected one of {list(EVENT_TYPES)}")


def _event_accel(kind: str, p: dict[str, Any], v: float, dt: float) -> np.ndarray:
    """Longitudinal accel samples of an event (its length is the event's duration)."""
    n_r = max(1, int(round(0.35 / dt)))
    if kind == "hard_brake":
        shape = _trapezoid(n_r, int(round(p["hold_s"] / dt)))
        return -p["decel"] * shape
    if kind == "harsh_acceleration":
        shape = _trapezoid(n_r, int(round(p["hold_s"] / dt)))
        return p["accel"] * shape
    if kind == "sharp_turn":
        lat_s = p["heading_change_rad"] * v / p["lat"]  # time at full lateral accel
        n = int(round((lat_s + 1.2) / dt))
        return np.zeros(n)
    if kind in ("lane_change_left", "lane_change_right"):
        return np.zeros(int(round(p["duration_s"] / dt)))
    if kind == "stop_and_go":
        down = _speed_change(-v, 2.5, dt)
        stand = np.zeros(int(round(p["stand_s"] / dt)))
        up = _speed_change(p["v_after"], 2.2, dt)
        p["_n_down"] = len(down)
        p["_n_stand"] = len(stand)
        return np.concatenate([down, stand, up])
    if kind == "high_speed":
        up = _speed_change(p["v_peak"] - v, 1.8, dt)
        hold = np.zeros(int(round(p["hold_s"] / dt)))
        down = _speed_change(v - p["v_peak"], 1.8, dt)
        return np.concatenate([up, hold, down])
    if kind == "disengagement":
        return np.zeros(int(round(0.5 / dt)))
    if kind == "shadow_disagreement":
        return np.zeros(int(round((p["hold_s"] + 0.8) / dt)))
    if kind == "gps_glitch":
        return np.zeros(int(p["samples"]) + 2)
    raise ValueError(kind)


# --------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------
def _layout(
    kinds: Sequence[str], params: Sequence[dict[str, Any]], n_total: int, dt: float, v0: float, rng: np.random.Generator
) -> tuple[list[Phase], np.ndarray, float] | None:
    """Lay the events out with gentle gaps; return phases and the accel profile, or None if they do not fit."""
    n_lead = int(round(LEAD_S / dt))
    n_gap_min = int(round(MIN_GAP_S / dt))
    n_tail = int(round(TAIL_S / dt))
    # First pass: minimum lengths, to know the slack.
    v = v0
    pieces: list[tuple[str, int, dict[str, Any], float]] = []  # (kind, n_gap_min_needed, params, v_pre)
    need = 0
    for j, (k, p) in enumerate(zip(kinds, params)):
        lo, hi = _v_pre_range(k, p)
        if j == 0:  # the drive starts at a speed that suits its first event
            v0 = v = float(np.clip(v, lo, hi))
        v_pre = float(np.clip(v, lo, hi))
        if abs(v_pre - v) > 0.05:
            v_pre = float(rng.uniform(lo, hi))
        n_change = _speed_change_len(v_pre - v, GENTLE_ACCEL, dt) + int(round(1.0 / dt))
        n_g = max(n_lead if j == 0 else n_gap_min, n_change)
        acc = _event_accel(k, dict(p), v_pre, dt)
        v_after = v_pre + acc.sum() * dt
        need += n_g + len(acc)
        pieces.append((k, n_g, p, v_pre))
        v = max(v_after, 0.0)
    need += n_tail
    if need > n_total:
        return None
    slack = n_total - need
    shares = rng.dirichlet(np.ones(len(pieces) + 1)) * slack
    extra = np.floor(shares).astype(int)
    extra[-1] += slack - extra.sum()
    # Second pass: build.
    accel = np.zeros(n_total)
    phases: list[Phase] = []
    i = 0
    v = v0
    for (k, n_g, p, v_pre), ex in zip(pieces, extra[:-1]):
        n_gap = n_g + int(ex)
        ch = _speed_change(v_pre - v, GENTLE_ACCEL, dt)
        pos = i + int(rng.integers(0, max(1, n_gap - len(ch))))
        accel[pos : pos + len(ch)] = ch
        # zero-mean wobble
        kper = int(rng.integers(1, 3))
        tt = np.arange(n_gap) / n_gap
        accel[i : i + n_gap] += 0.2 * np.sin(2 * math.pi * kper * tt)
        phases.append(Phase("gap", i, i + n_gap))
        i += n_gap
        acc = _event_accel(k, p, v_pre, dt)
        accel[i : i + len(acc)] = acc
        phases.append(Phase(k, i, i + len(acc), p | {"v_pre": v_pre}))
        i += len(acc)
        v = max(v_pre + acc.sum() * dt, 0.0)
    n_last = n_total - i
    tt = np.arange(n_last) / max(n_last, 1)
    accel[i:] += 0.2 * np.sin(2 * math.pi * tt)
    phases.append(Phase("gap", i, n_total))
    return phases, accel, v0


def _est_duration(kind: str) -> float:
    return {
        "hard_brake": 2.0,
        "harsh_acceleration": 2.0,
        "sharp_turn": 4.0,
        "lane_change_left": 4.5,
        "lane_change_right": 4.5,
        "stop_and_go": 14.0,
        "high_speed": 15.0,
        "disengagement": 0.5,
        "shadow_disagreement": 2.0,
        "gps_glitch": 0.3,
    }[kind]


def assign_events(n_drives: int, duration_s: float, rng: np.random.Generator) -> list[list[str]]:
    """Spread every event type over the fleet (biggest first, to the emptiest drive), then add extras."""
    budget = [duration_s - LEAD_S - TAIL_S + MIN_GAP_S for _ in range(n_drives)]
    out: list[list[str]] = [[] for _ in range(n_drives)]
    types = list(EVENT_TYPES)
    rng.shuffle(types)
    types.sort(key=lambda k: -_est_duration(k))
    for k in types:
        j = int(np.argmax(budget))
        cost = _est_duration(k) + MIN_GAP_S + 1.0
        if budget[j] >= cost:
            out[j].append(k)
            budget[j] -= cost
    extras = [k for k in EVENT_TYPES if k not in ("stop_and_go", "high_speed")]
    for j in range(n_drives):
        for _ in range(3):
            fits = [k for k in extras if budget[j] >= _est_duration(k) + MIN_GAP_S + 3.0]
            if not fits:
                break
            k = fits[int(rng.integers(0, len(fits)))]
            out[j].append(k)
            budget[j] -= _est_duration(k) + MIN_GAP_S + 1.0
    return out


# --------------------------------------------------------------------------------------
# Time of day
# --------------------------------------------------------------------------------------
def solar_elevation_deg(lat: float, lon: float, when_utc: dt.datetime) -> float:
    from astral import Observer
    from astral.sun import elevation

    return float(elevation(Observer(latitude=lat, longitude=lon), when_utc))


def classify_time_of_day(elevation_deg: float) -> str:
    """day: elevation > 6 deg; dusk (or dawn): -6..6 deg; night: < -6 deg."""
    if elevation_deg > 6.0:
        return "day"
    if elevation_deg >= -6.0:
        return "dusk"
    return "night"


def pick_start_utc(
    lat: float, lon: float, date: dt.date, tod: str, duration_s: float, rng: np.random.Generator
) -> dt.datetime:
    """A UTC start on ``date`` such that the whole drive is in ``tod`` (1 degree margin)."""
    day0 = dt.datetime(date.year, date.month, date.day, tzinfo=dt.timezone.utc)
    ok: list[dt.datetime] = []
    for minute in range(0, 24 * 60 - int(duration_s / 60) - 2, 2):
        t0 = day0 + dt.timedelta(minutes=minute)
        t1 = t0 + dt.timedelta(seconds=duration_s + 5)
        e0, e1 = solar_elevation_deg(lat, lon, t0), solar_elevation_deg(lat, lon, t1)
        if all(classify_time_of_day(e) == tod and abs(abs(e) - 6.0) > 1.0 for e in (e0, e1)):
            ok.append(t0)
    if not ok:
        raise ValueError(f"no {tod} window at ({lat}, {lon}) on {date}")
    t = ok[int(rng.integers(0, len(ok)))]
    return t + dt.timedelta(seconds=int(rng.integers(0, 60)))


# --------------------------------------------------------------------------------------
# Building a scenario
# --------------------------------------------------------------------------------------
def _intervals(mask: np.ndarray) -> list[tuple[int, int]]:
    """[i0, i1] inclusive runs of True."""
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.diff(m.astype(np.int8))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def build_scenario(
    *,
    vehicle_id: str,
    drive_index: int,
    seed: int,
    duration_s: float,
    telemetry_hz: float,
    start_date: dt.date,
    time_of_day: str | None = None,
    events: Sequence[str] | None = None,
    video_lead_s: float = 0.1,
) -> Scenario:
    """Plan and integrate one drive. ``events`` forces the event types (in any order)."""
    rng = np.random.default_rng([seed, drive_index, _stable_hash(vehicle_id)])
    hz = float(telemetry_hz)
    dt_s = 1.0 / hz
    total_s = duration_s + video_lead_s + 0.4
    n = int(math.ceil(total_s * hz)) + 1
    v0 = float(rng.uniform(12.0, 20.0))

    kinds = list(events) if events is not None else []
    for k in kinds:
        if k not in EVENT_TYPES:
            raise ValueError(f"unknown event type {k!r}; expected one of {list(EVENT_TYPES)}")
    # Try orders; drop the last event until the rest fits.
    res = None
    while True:
        for _ in range(30):
            order = list(rng.permutation(len(kinds))) if kinds else []
            ks = [kinds[i] for i in order]
            ps = [_event_params(k, rng, hz) for k in ks]
            res = _layout(ks, ps, n, dt_s, v0, rng)
            if res is not None:
                break
        if res is not None or not kinds:
            break
        log.info("%s drive %d: events %s do not fit in %.1f s; dropping %s", vehicle_id, drive_index, kinds, duration_s, kinds[-1])
        kinds = kinds[:-1]
    if res is None:
        raise ValueError(f"duration_s={duration_s} is too short for a drive")
    phases, accel, v0 = res

    # ---- speed
    speed = v0 + np.concatenate([[0.0], np.cumsum(accel[:-1]) * dt_s])
    stand = np.zeros(n, dtype=bool)
    for ph in phases:
        if ph.kind == "stop_and_go":
            a = ph.i0 + ph.params["_n_down"]
            b = a + ph.params["_n_stand"]
            stand[a:b] = True
            ph.params["_stand"] = (a, b - 1)
    speed = np.where(stand, 0.0, np.maximum(speed, 0.0))

    # ---- curvature: gentle background road curvature + event curvature
    t = np.arange(n) * dt_s
    in_event = np.zeros(n)
    for ph in phases:
        if ph.kind != "gap":
            in_event[max(0, ph.i0 - int(hz)) : ph.i1 + int(hz)] = 1.0
    fade = np.convolve(1.0 - in_event, np.ones(int(hz)) / int(hz), mode="same")
    fade = np.clip(fade, 0.0, 1.0) * (1.0 - in_event)
    p1, p2 = rng.uniform(10, 25), rng.uniform(6, 14)
    f1, f2 = rng.uniform(0, 2 * math.pi, size=2)
    raw = 0.7 * np.sin(2 * math.pi * t / p1 + f1) + 0.3 * np.sin(2 * math.pi * t / p2 + f2)
    vs = np.maximum(speed, 3.0)
    kmax = np.minimum(0.85 * GENTLE_LAT / vs**2, 0.85 * GENTLE_YAW / vs)
    road_k = raw * kmax * fade
    path_k = road_k.copy()
    lane_y = np.zeros(n)
    for ph in phases:
        if ph.kind == "sharp_turn":
            p = ph.params
            m = ph.i1 - ph.i0
            n_r = int(round(0.6 / dt_s))
            shape = _trapezoid(n_r, max(0, m - 2 * n_r))[:m]
            sign = 1.0 if p["direction"] == "left" else -1.0
            v_seg = np.maximum(speed[ph.i0 : ph.i1], 1.0)
            k = sign * p["lat"] * shape / v_seg**2
            path_k[ph.i0 : ph.i1] += k
            road_k[ph.i0 : ph.i1] += k
        elif ph.kind in ("lane_change_left", "lane_change_right"):
            m = ph.i1 - ph.i0
            T = m * dt_s
            A = LANE_WIDTH_M * 2 * math.pi / T**2
            sign = 1.0 if ph.kind.endswith("left") else -1.0
            tt = np.arange(m) * dt_s
            alat = sign * A * np.sin(2 * math.pi * tt / T)
            path_k[ph.i0 : ph.i1] += alat / np.maximum(speed[ph.i0 : ph.i1], 1.0) ** 2
            y = sign * A * T / (2 * math.pi) * (tt - T / (2 * math.pi) * np.sin(2 * math.pi * tt / T))
            lane_y[ph.i0 : ph.i1] += y
            lane_y[ph.i1 :] += sign * LANE_WIDTH_M
            ph.params.update(peak_lat_mps2=A, offset_m=LANE_WIDTH_M)
    # keep the ego within 5 lanes
    lanes = np.round(lane_y / LANE_WIDTH_M)
    start_lane = -round((lanes.min() + lanes.max()) / 2)
    lane_y += start_lane * LANE_WIDTH_M

    steer = STEERING_RATIO * np.arctan(WHEELBASE_M * path_k)
    yaw = speed * np.tan(steer / STEERING_RATIO) / WHEELBASE_M
    lat_acc = speed * yaw

    # ---- sensor noise (small, keeps signals clear of thresholds)
    noise_rng = np.random.default_rng([seed, drive_index, _stable_hash(vehicle_id), 7])
    accel_meas = accel + noise_rng.normal(0, 0.03, n)
    accel_meas[stand] = noise_rng.normal(0, 0.01, int(stand.sum()))
    lat_meas = lat_acc + noise_rng.normal(0, 0.03, n)
    yaw_meas = yaw + noise_rng.normal(0, 0.002, n)
    steer_meas = steer + noise_rng.normal(0, 0.002, n)

    # ---- heading and GPS track
    tod = time_of_day or TIMES_OF_DAY[int(rng.integers(0, 3))]
    # a city (near a real one) where the chosen time of day happens on this date
    start_utc = None
    for ci in rng.permutation(len(CITIES)):
        city, lat0, lon0 = CITIES[int(ci)]
        lat0 += float(rng.uniform(-0.03, 0.03))
        lon0 += float(rng.uniform(-0.03, 0.03))
        try:
            start_utc = pick_start_utc(lat0, lon0, start_date, tod, total_s, rng)
            break
        except ValueError:
            log.debug("no %s window in %s on %s", tod, city, start_date)
    if start_utc is None:
        raise ValueError(f"no city in {[c[0] for c in CITIES]} has a {tod} window on {start_date}")
    h0 = float(rng.uniform(0, 2 * math.pi))
    heading = h0 - np.concatenate([[0.0], np.cumsum(yaw[:-1]) * dt_s])
    dist = np.concatenate([[0.0], np.cumsum(speed[:-1]) * dt_s])
    north = np.concatenate([[0.0], np.cumsum((speed * np.cos(heading))[:-1]) * dt_s])
    east = np.concatenate([[0.0], np.cumsum((speed * np.sin(heading))[:-1]) * dt_s])
    lat = lat0 + np.degrees(north / EARTH_R)
    lon = lon0 + np.degrees(east / (EARTH_R * np.cos(np.radians(lat0))))
    heading = np.mod(heading, 2 * math.pi)
    heading = np.where(heading >= 2 * math.pi, 0.0, heading)
    lat_valid = np.ones(n, dtype=bool)

    # ---- driver assist, shadow steering
    engaged = np.ones(n, dtype=bool)
    shadow = steer + noise_rng.normal(0, 0.008, n)
    rel_engage = None
    if not any(ph.kind == "disengagement" for ph in phases) and rng.random() < 0.3:
        # starts disengaged and engages at some point in a gap (false -> true is not an event)
        gaps = [ph for ph in phases if ph.kind == "gap" and ph.i1 - ph.i0 > 2 * hz]
        g = gaps[int(rng.integers(0, len(gaps)))]
        rel_engage = int(rng.integers(g.i0 + int(hz) // 2, g.i1 - int(hz) // 2))
        engaged[:rel_engage] = False

    # ---- events needing overlays and ground truth
    gt_events: list[dict[str, Any]] = []
    t_ns = np.empty(n, dtype=np.int64)
    boot_ns = int(rng.integers(20, 600)) * 1_000_000_000 + int(rng.integers(0, 1000)) * 1_000_000
    t_ns[:] = boot_ns + np.round(np.arange(n) * (1e9 / hz)).astype(np.int64)

    def ev(kind: str, a: int, b: int, params: dict[str, Any]) -> None:
        gt_events.append({"type": kind, "start_ns": int(t_ns[a]), "end_ns": int(t_ns[b]), "params": params})

    for ph in phases:
        k, p = ph.kind, ph.params
        sl = slice(ph.i0, ph.i1)
        if k == "gap":
            continue
        if k == "hard_brake":
            runs = _intervals(accel_meas[sl] <= HARD_BRAKE_MPS2)
            a, b = runs[0][0] + ph.i0, runs[-1][1] + ph.i0
            ev(k, a, b, {"peak_decel_mps2": round(float(accel_meas[sl].min()), 3), "speed_before_mps": round(float(speed[ph.i0]), 3)})
        elif k == "harsh_acceleration":
            runs = _intervals(accel_meas[sl] >= HARSH_ACCEL_MPS2)
            a, b = runs[0][0] + ph.i0, runs[-1][1] + ph.i0
            ev(k, a, b, {"peak_accel_mps2": round(float(accel_meas[sl].max()), 3), "speed_before_mps": round(float(speed[ph.i0]), 3)})
        elif k == "sharp_turn":
            runs = _intervals(np.abs(lat_meas[sl]) >= SHARP_TURN_LAT_MPS2)
            a, b = runs[0][0] + ph.i0, runs[-1][1] + ph.i0
            ev(k, a, b, {
                "direction": p["direction"],
                "peak_lat_accel_mps2": round(float(np.abs(lat_meas[sl]).max()), 3),
                "peak_yaw_rate_radps": round(float(np.abs(yaw_meas[sl]).max()), 4),
                "speed_mps": round(float(speed[ph.i0]), 3),
            })
        elif k in ("lane_change_left", "lane_change_right"):
            ev(k, ph.i0, ph.i1 - 1, {
                "offset_m": LANE_WIDTH_M,
                "duration_s": round((ph.i1 - ph.i0) / hz, 3),
                "peak_lat_accel_mps2": round(float(p["peak_lat_mps2"]), 3),
            })
        elif k == "stop_and_go":
            sa, sb = p["_stand"]
            ev(k, ph.i0, ph.i1 - 1, {
                "stop_start_ns": int(t_ns[sa]),
                "stop_end_ns": int(t_ns[sb]),
                "stopped_s": round((sb - sa + 1) / hz, 3),
                "speed_before_mps": round(float(speed[ph.i0]), 3),
            })
        elif k == "high_speed":
            runs = _intervals(speed[sl] > HIGH_SPEED_MPS)
            a, b = runs[0][0] + ph.i0, runs[-1][1] + ph.i0
            ev(k, a, b, {"max_speed_mps": round(float(speed[sl].max()), 3)})
        elif k == "disengagement":
            # engaged for >= 3 s before (re-engage earlier if needed), false from the instant on
            at = ph.i0 + (ph.i1 - ph.i0) // 2
            engaged[max(0, at - int(3 * hz)) : at] = True
            back = at + int(rng.uniform(3.0, 6.0) * hz)
            engaged[at:back] = False
            ev(k, at, at, {"speed_mps": round(float(speed[at]), 3)})
        elif k == "shadow_disagreement":
            m = ph.i1 - ph.i0
            n_r = int(round(0.4 / dt_s))
            shape = _trapezoid(n_r, max(0, m - 2 * n_r))[:m]
            shadow[sl] += p["offset_rad"] * shape
            runs = _intervals(np.abs(shadow[sl] - steer_meas[sl]) > SHADOW_DISAGREE_RAD)
            a, b = runs[0][0] + ph.i0, runs[-1][1] + ph.i0
            ev(k, a, b, {"peak_diff_rad": round(float(np.abs(shadow[sl] - steer_meas[sl]).max()), 4)})
        elif k == "gps_glitch":
            a = ph.i0 + 1
            b = a + p["samples"] - 1
            if p["kind"] == "jump":
                dn = p["jump_m"] * math.cos(p["bearing_rad"])
                de = p["jump_m"] * math.sin(p["bearing_rad"])
                lat[a : b + 1] += math.degrees(dn / EARTH_R)
                lon[a : b + 1] += math.degrees(de / (EARTH_R * math.cos(math.radians(lat0))))
                ev(k, a, b, {"kind": "jump", "jump_m": round(p["jump_m"], 2), "samples": p["samples"]})
            else:
                lat_valid[a : b + 1] = False
                ev(k, a, b, {"kind": "dropout", "samples": p["samples"]})
    gt_events.sort(key=lambda e: (e["start_ns"], e["type"]))

    # ---- brake / throttle / gear
    throttle = np.where(accel_meas > -0.3, np.clip(0.12 + accel / 4.0 + 0.004 * speed, 0.0, 1.0), 0.0)
    brake = np.where(accel_meas <= -0.3, np.clip(-accel / 8.0, 0.0, 1.0), 0.0)
    brake = np.where(stand, 0.3, brake)
    throttle = np.where(stand, 0.0, throttle)
    gear = np.clip(1 + np.searchsorted(np.array([5.0, 10.0, 15.0, 20.0, 26.0]), speed, side="right"), 1, 6).astype(np.int8)

    table = pa.table(
        {
            "t_ns": pa.array(t_ns, pa.int64()),
            "speed_mps": pa.array(np.round(speed, 4), pa.float64()),
            "accel_lon_mps2": pa.array(np.round(accel_meas, 4), pa.float64()),
            "accel_lat_mps2": pa.array(np.round(lat_meas, 4), pa.float64()),
            "yaw_rate_radps": pa.array(np.round(yaw_meas, 5), pa.float64()),
            "steering_angle_rad": pa.array(np.round(steer_meas, 5), pa.float64()),
            "brake": pa.array(np.round(brake, 4), pa.float64()),
            "throttle": pa.array(np.round(throttle, 4), pa.float64()),
            "gear": pa.array(gear, pa.int8()),
            "lat_deg": pa.array(np.round(lat, 8), pa.float64(), mask=~lat_valid),
            "lon_deg": pa.array(np.round(lon, 8), pa.float64(), mask=~lat_valid),
            "heading_rad": pa.array(np.round(heading, 5) % (2 * math.pi), pa.float64()),
            "driver_assist_engaged": pa.array(engaged, pa.bool_()),
            "shadow_steering_angle_rad": pa.array(np.round(shadow, 5), pa.float64()),
        }
    )

    # ---- time of day and UTC
    utc_start_ns = int(start_utc.timestamp()) * 1_000_000_000
    utc_offset_ns = utc_start_ns - boot_ns
    drive_id = f"{vehicle_id}-{start_utc.strftime('%Y%m%dT%H%M%SZ')}"

    # ---- manoeuvres
    manoeuvres = _manoeuvres(phases, speed, yaw, accel, t_ns, hz)

    return Scenario(
        vehicle_id=vehicle_id,
        drive_id=drive_id,
        seed=seed,
        hz=hz,
        t_ns=t_ns,
        speed=speed,
        accel=accel,
        curvature=path_k,
        road_curvature=road_k,
        lane_offset_m=lane_y,
        distance_m=dist,
        table=table,
        phases=phases,
        events=gt_events,
        manoeuvres=manoeuvres,
        time_of_day=tod,
        utc_offset_ns=utc_offset_ns,
        city=city,
        lat0=lat0,
        lon0=lon0,
    )


def _stable_hash(s: str) -> int:
    h = 2166136261
    for ch in s.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


def _manoeuvres(phases: list[Phase], speed: np.ndarray, yaw: np.ndarray, accel: np.ndarray, t_ns: np.ndarray, hz: float) -> list[dict[str, Any]]:
    n = len(speed)
    lab = np.array(["straight"] * n, dtype=object)
    lab[accel >= 1.0] = "accelerating"
    lab[accel <= -1.0] = "braking"
    for ph in phases:
        if ph.kind == "stop_and_go":
            lab[ph.i0 : ph.i0 + ph.params["_n_down"]] = "stopping"
    lab[yaw >= 0.1] = "left_turn"
    lab[yaw <= -0.1] = "right_turn"
    for ph in phases:
        if ph.kind in ("lane_change_left", "lane_change_right"):
            lab[ph.i0 : ph.i1] = ph.kind
    lab[speed < STOPPED_MPS] = "stopped"
    runs: list[list[Any]] = []
    for i, v in enumerate(lab):
        if runs and runs[-1][0] == v:
            runs[-1][2] = i
        else:
            runs.append([v, i, i])
    min_len = int(0.3 * hz)
    merged: list[list[Any]] = []
    for r in runs:
        if merged and (r[2] - r[1] + 1 < min_len or merged[-1][0] == r[0]):
            merged[-1][2] = r[2]
        else:
            merged.append(r)
    return [{"value": v, "start_ns": int(t_ns[a]), "end_ns": int(t_ns[b])} for v, a, b in merged]
