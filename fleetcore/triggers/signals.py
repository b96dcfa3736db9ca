"""Telemetry signal processing: resample canonical telemetry onto a uniform grid and derive signals.

Two steps, both pure functions over Polars frames:

* :func:`resample` puts canonical telemetry (``schemas.TELEMETRY``) on a uniform grid on the
  vehicle clock (``t_ns``, int64), starting at the first sample, every ``1/rate_hz`` s.
  Numeric signals are linearly interpolated (heading on the unwrapped angle), discrete signals
  (``gear``, ``driver_assist_engaged``) are forward-filled (value of the latest sample at or
  before the grid time). Nothing is interpolated across a gap longer than
  ``max(max_gap_s, 2.5 x the signal's median native sample interval)``: those grid points stay
  null. ``gap`` is True where the telemetry as a whole has such a gap. The GPS-quality signals
  ``gps_jump_m`` and ``gps_missing`` are computed here too, because they need the native GPS fix
  times (see :data:`DERIVED_DOC`).
* :func:`derive` adds derived signals (km/h, smoothed accelerations, jerk, yaw rate, steering rate,
  assist state changes, shadow-model disagreement, stop flags, lane-change geometry). The full
  list with units is :data:`DERIVED_DOC`; the column set and dtypes are :data:`DERIVED_SCHEMA`.

All missing values are nulls (never NaN). No function here reads files or environment variables.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import polars as pl
import pyarrow as pa

from schemas import TELEMETRY

NS_PER_S: Final = 1_000_000_000

#: Light centred smoothing applied to accelerations and steering rate (seconds).
SMOOTH_S: Final = 0.2
#: Below this speed (m/s) the vehicle is "stopped".
STOPPED_MPS: Final = 0.5
#: At or above this speed (m/s) the vehicle is "moving" (for since/until_moving_s).
MOVING_MPS: Final = 2.0
#: Heading from GPS is only differentiated into a yaw rate above this speed (m/s).
HEADING_MIN_SPEED_MPS: Final = 2.0
#: Kinematic bicycle model used for a yaw rate from steering when there is no yaw rate or heading:
#: yaw_rate = speed * tan(steering_angle / STEER_RATIO) / WHEELBASE_M (a typical passenger car).
STEER_RATIO: Final = 15.0
WHEELBASE_M: Final = 2.7
#: Widths of the centred windows used for the lane-change geometry signals (seconds); per sample
#: the window that best isolates a manoeuvre is reported (see ``_lane_signals``).
LANE_WINDOWS_S: Final = (5.25, 6.0)
#: Length of the window edges that must be steady in heading for a lane change (seconds).
LANE_EDGE_S: Final = 0.25
#: A GPS fix interval longer than this many median fix intervals counts as missing GPS.
GPS_MISSING_FACTOR: Final = 2.5
#: Interpolation is allowed across gaps up to this many median native intervals (and max_gap_s).
NATIVE_GAP_FACTOR: Final = 2.5

EARTH_RADIUS_M: Final = 6_371_008.8

_DISCRETE = ("gear", "driver_assist_engaged")
_CANONICAL: Final = list(TELEMETRY.column_names)

#: Column -> Polars dtype of the frame returned by :func:`derive` (in this order).
DERIVED_SCHEMA: Final[dict[str, pl.DataType]] = {
    "t_ns": pl.Int64(),
    "speed_mps": pl.Float64(),
    "accel_lon_mps2": pl.Float64(),
    "accel_lat_mps2": pl.Float64(),
    "yaw_rate_radps": pl.Float64(),
    "steering_angle_rad": pl.Float64(),
    "brake": pl.Float64(),
    "throttle": pl.Float64(),
    "gear": pl.Int8(),
    "lat_deg": pl.Float64(),
    "lon_deg": pl.Float64(),
    "heading_rad": pl.Float64(),
    "driver_assist_engaged": pl.Boolean(),
    "shadow_steering_angle_rad": pl.Float64(),
    # added by resample
    "gap": pl.Boolean(),
    "gps_jump_m": pl.Float64(),
    "gps_missing": pl.Boolean(),
    # added by derive
    "t_s": pl.Float64(),
    "speed_kmh": pl.Float64(),
    "accel_lon": pl.Float64(),
    "accel_lat": pl.Float64(),
    "jerk": pl.Float64(),
    "yaw_rate": pl.Float64(),
    "steering_rate": pl.Float64(),
    "since_assist_change_s": pl.Float64(),
    "assist_disengaged": pl.Boolean(),
    "assist_engaged_now": pl.Boolean(),
    "shadow_steer_diff": pl.Float64(),
    "stopped": pl.Boolean(),
    "since_moving_s": pl.Float64(),
    "until_moving_s": pl.Float64(),
    "lane_offset_m": pl.Float64(),
    "lane_heading_change_rad": pl.Float64(),
    "lane_heading_peak_rad": pl.Float64(),
    "lane_heading_edge_rad": pl.Float64(),
}

#: Column -> one-line description (units, provenance) of every non-canonical signal.
DERIVED_DOC: Final[dict[str, str]] = {
    "gap": "True where the telemetry has a gap longer than max_gap_s (no interpolation there)",
    "gps_jump_m": "distance between consecutive GPS fixes minus speed*dt, clipped at 0 (m); held until the next fix",
    "gps_missing": "True inside an interval between GPS fixes longer than 2.5 median fix intervals, "
    "in a drive that has GPS (not at drive start/end, not inside a telemetry gap)",
    "t_s": "seconds since the drive start (first telemetry sample unless drive_start_ns is given)",
    "speed_kmh": "speed_mps * 3.6",
    "accel_lon": "longitudinal acceleration (m/s^2): accel_lon_mps2 where present, else d(speed)/dt; "
    "centred moving average over 0.2 s",
    "accel_lat": "lateral acceleration (m/s^2, + = left): accel_lat_mps2 where present, else speed*yaw_rate; "
    "centred moving average over 0.2 s",
    "jerk": "d(accel_lon)/dt (m/s^3)",
    "yaw_rate": "yaw rate (rad/s, + = left/counter-clockwise): yaw_rate_radps where present, "
    "else -d(heading)/dt when speed > 2 m/s, else speed*tan(steering_angle_rad/15)/2.7 (bicycle model)",
    "steering_rate": "d(steering_angle_rad)/dt (rad/s), centred moving average over 0.2 s",
    "since_assist_change_s": "seconds since driver_assist_engaged last changed; null before the first change",
    "assist_disengaged": "True at the sample where driver_assist_engaged goes True -> False",
    "assist_engaged_now": "True at the sample where driver_assist_engaged goes False -> True",
    "shadow_steer_diff": "|shadow_steering_angle_rad - steering_angle_rad| (rad)",
    "stopped": "speed_mps < 0.5",
    "since_moving_s": "seconds since speed was last >= 2 m/s; null if it never was before",
    "until_moving_s": "seconds until speed is next >= 2 m/s; null if it never is again",
    "lane_offset_m": "lateral displacement (m, + = left) over a centred window (5.25 s or 6 s, whichever "
    "isolates a manoeuvre best) relative to the road, dead-reckoned from speed and yaw_rate; the road is "
    "assumed to turn at the mean yaw rate of the window's first and last 0.25 s (so steady curves give ~0)",
    "lane_heading_change_rad": "heading change over the same window, relative to the road (rad)",
    "lane_heading_peak_rad": "largest |heading relative to the road| inside the window (rad)",
    "lane_heading_edge_rad": "half the difference of the mean yaw rates of the window's first and last 0.25 s, "
    "times 0.25 s (rad): small when the road curvature is the same before and after the manoeuvre",
}

DERIVED_COLUMNS: Final[tuple[str, ...]] = tuple(DERIVED_SCHEMA)


# --------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------
def _to_arrow(telemetry: pa.Table | pl.DataFrame) -> pa.Table:
    if isinstance(telemetry, pl.DataFrame):
        table = telemetry.to_arrow()
    elif isinstance(telemetry, pa.Table):
        table = telemetry
    else:
        raise TypeError(f"telemetry must be a pyarrow.Table or polars.DataFrame, got {type(telemetry).__name__}")
    # large_string etc. are irrelevant here; conform casts and adds absent nullable columns.
    return TELEMETRY.conform(table)


def _float_np(col: pa.ChunkedArray) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _allowed_gap_ns(times: np.ndarray, max_gap_ns: int) -> float:
    if len(times) < 2:
        return float(max_gap_ns)
    return max(float(max_gap_ns), NATIVE_GAP_FACTOR * float(np.median(np.diff(times))))


def _bracket(times: np.ndarray, grid: np.ndarray, allowed_ns: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left sample index, interpolation weight and validity of each grid point."""
    n = len(times)
    left = np.searchsorted(times, grid, side="right") - 1
    valid = left >= 0
    li = np.clip(left, 0, max(n - 1, 0))
    ri = np.clip(left + 1, 0, max(n - 1, 0))
    exact = valid & (times[li] == grid)
    span = (times[ri] - times[li]).astype(np.float64)
    has_right = valid & (left + 1 < n)
    ok_span = has_right & (span > 0) & (span <= allowed_ns)
    valid = exact | ok_span
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(ok_span & ~exact, (grid - times[li]).astype(np.float64) / np.where(span > 0, span, 1.0), 0.0)
    return li, w, valid


def _interp_numeric(t: np.ndarray, v: np.ndarray, grid: np.ndarray, max_gap_ns: int, *, angle: bool = False) -> np.ndarray:
    ok = np.isfinite(v)
    tc, vc = t[ok], v[ok]
    out = np.full(len(grid), np.nan)
    if len(tc) == 0:
        return out
    if angle:
        vc = np.unwrap(vc)
    li, w, valid = _bracket(tc, grid, _allowed_gap_ns(tc, max_gap_ns))
    ri = np.minimum(li + 1, len(tc) - 1)
    vals = vc[li] + (vc[ri] - vc[li]) * w
    out[valid] = vals[valid]
    if angle:
        out = np.mod(out, 2 * math.pi)
    return out


def _ffill_discrete(t: np.ndarray, arr: pa.Array, grid: np.ndarray, max_gap_ns: int, dtype: pa.DataType) -> pa.Array:
    valid_src = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    tc = t[valid_src]
    if len(tc) == 0:
        return pa.nulls(len(grid), type=dtype)
    vals = np.asarray(arr.filter(pa.array(valid_src)).to_numpy(zero_copy_only=False))
    li, _w, valid = _bracket(tc, grid, _allowed_gap_ns(tc, max_gap_ns))
    return pa.array(vals[li], type=dtype, mask=~valid)


def _haversine_m(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _gps_quality(
    t: np.ndarray, lat: np.ndarray, lon: np.ndarray, speed: np.ndarray, grid: np.ndarray, gap: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """gps_jump_m (NaN = null) and gps_missing on the grid, from the native GPS fixes."""
    fix = np.isfinite(lat) & np.isfinite(lon)
    tf, la, lo = t[fix], lat[fix], lon[fix]
    jump = np.full(len(grid), np.nan)
    missing = np.zeros(len(grid), dtype=bool)
    if len(tf) < 2:
        return jump, missing
    thr = GPS_MISSING_FACTOR * float(np.median(np.diff(tf)))
    # expected travel between fixes from the speed signal, at the fix times
    sok = np.isfinite(speed)
    if sok.any():
        v_fix = np.interp(tf.astype(np.float64), t[sok].astype(np.float64), speed[sok])
    else:
        v_fix = np.zeros(len(tf))
    dist = _haversine_m(la[:-1], lo[:-1], la[1:], lo[1:])
    dt_s = np.diff(tf).astype(np.float64) / NS_PER_S
    expected = 0.5 * (np.abs(v_fix[:-1]) + np.abs(v_fix[1:])) * dt_s
    jumps = np.concatenate([[0.0], np.maximum(dist - expected, 0.0)])
    k = np.searchsorted(tf, grid, side="right") - 1  # latest fix at or before the grid point
    inside = (k >= 0) & (k < len(tf) - 1)
    kk = np.clip(k, 0, len(tf) - 1)
    k1 = np.clip(k + 1, 0, len(tf) - 1)
    long_gap = inside & ((tf[k1] - tf[kk]).astype(np.float64) > thr)
    missing = long_gap & (grid > tf[kk]) & ~gap
    held = (k >= 0) & ~long_gap
    jump[held] = jumps[kk[held]]
    # every fix lands on the first grid point at or after it: keep the largest jump there, so that
    # spikes shorter than the grid step are not lost between grid points
    if len(grid) > 1:
        step = int(grid[1] - grid[0])
        gi = np.ceil((tf - grid[0]) / step).astype(np.int64)
        inside_grid = (gi >= 0) & (gi < len(grid))
        agg = np.full(len(grid), -np.inf)
        np.maximum.at(agg, gi[inside_grid], jumps[inside_grid])
        hit = np.isfinite(agg)
        jump[hit] = np.where(np.isfinite(jump[hit]), np.maximum(jump[hit], agg[hit]), agg[hit])
    return jump, missing


def resample(
    telemetry: pa.Table | pl.DataFrame,
    *,
    rate_hz: float = 20.0,
    max_gap_s: float = 0.5,
) -> pl.DataFrame:
    """Resample canonical telemetry onto a uniform ``rate_hz`` grid on the vehicle clock.

    The grid starts at the first sample and ends at (or just before) the last one. Returns the
    canonical columns plus ``gap``, ``gps_jump_m`` and ``gps_missing``. Rows are sorted by
    ``t_ns``; duplicate timestamps keep their first row.
    """
    if not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    if not max_gap_s > 0:
        raise ValueError(f"max_gap_s must be > 0, got {max_gap_s}")
    table = _to_arrow(telemetry)
    t_all = np.asarray(table.column("t_ns").to_numpy(), dtype=np.int64)
    order = np.argsort(t_all, kind="stable")
    t_sorted = t_all[order]
    keep = np.ones(len(t_sorted), dtype=bool)
    keep[1:] = np.diff(t_sorted) != 0
    idx = order[keep]
    table = table.take(pa.array(idx, type=pa.int64()))
    t = t_all[idx]

    step_ns = int(round(NS_PER_S / rate_hz))
    max_gap_ns = int(round(max_gap_s * NS_PER_S))
    if len(t) == 0:
        return pl.DataFrame(schema={k: DERIVED_SCHEMA[k] for k in [*_CANONICAL, "gap", "gps_jump_m", "gps_missing"]})
    n = int((t[-1] - t[0]) // step_ns) + 1
    grid = t[0] + np.arange(n, dtype=np.int64) * step_ns

    _li, _w, row_ok = _bracket(t, grid, _allowed_gap_ns(t, max_gap_ns))
    gap = ~row_ok

    cols: dict[str, pa.Array] = {"t_ns": pa.array(grid, type=pa.int64())}
    floats: dict[str, np.ndarray] = {}
    for f in TELEMETRY.schema:
        if f.name == "t_ns":
            continue
        col = table.column(f.name).combine_chunks()
        if f.name in _DISCRETE:
            cols[f.name] = _ffill_discrete(t, col, grid, max_gap_ns, f.type)
            continue
        raw = _float_np(col)
        floats[f.name] = raw
        out = _interp_numeric(t, raw, grid, max_gap_ns, angle=(f.name == "heading_rad"))
        cols[f.name] = pa.array(out, type=pa.float64(), from_pandas=True)

    jump, missing = _gps_quality(t, floats["lat_deg"], floats["lon_deg"], floats["speed_mps"], grid, gap)
    cols["gap"] = pa.array(gap, type=pa.bool_())
    cols["gps_jump_m"] = pa.array(jump, type=pa.float64(), from_pandas=True)
    cols["gps_missing"] = pa.array(missing, type=pa.bool_())
    df = pl.from_arrow(pa.table(cols))
    assert isinstance(df, pl.DataFrame)
    return df.cast({k: DERIVED_SCHEMA[k] for k in df.columns})


# --------------------------------------------------------------------------------------
# Derivation
# --------------------------------------------------------------------------------------
def _np(df: pl.DataFrame, name: str) -> np.ndarray:
    return df.get_column(name).cast(pl.Float64).fill_null(float("nan")).to_numpy().astype(np.float64, copy=True)


def _gradient(x: np.ndarray, dt: float) -> np.ndarray:
    """Central difference where both neighbours are finite, else one-sided, else NaN."""
    n = len(x)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    prev = np.concatenate([[np.nan], x[:-1]])
    nxt = np.concatenate([x[1:], [np.nan]])
    central = (nxt - prev) / (2 * dt)
    fwd = (nxt - x) / dt
    bwd = (x - prev) / dt
    out = np.where(np.isfinite(central), central, np.where(np.isfinite(fwd), fwd, bwd))
    return out


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    """NaN-aware centred moving average; NaN samples stay NaN."""
    if window <= 1 or len(x) == 0:
        return x.copy()
    h = window // 2
    ok = np.isfinite(x)
    xv = np.where(ok, x, 0.0)
    pad_v = np.concatenate([np.zeros(h + 1), xv, np.zeros(h)])
    pad_c = np.concatenate([np.zeros(h + 1), ok.astype(np.float64), np.zeros(h)])
    cs_v, cs_c = np.cumsum(pad_v), np.cumsum(pad_c)
    n = len(x)
    s = cs_v[2 * h + 1 : 2 * h + 1 + n] - cs_v[0:n]
    c = cs_c[2 * h + 1 : 2 * h + 1 + n] - cs_c[0:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(c > 0, s / np.where(c > 0, c, 1.0), np.nan)
    out[~ok] = np.nan
    return out


def _time_since(t_s: np.ndarray, mark: np.ndarray) -> np.ndarray:
    """Seconds since the latest sample (at or before) where mark is True; NaN before the first."""
    idx = np.where(mark, np.arange(len(mark)), -1)
    last = np.maximum.accumulate(idx) if len(idx) else idx
    out = np.full(len(mark), np.nan)
    ok = last >= 0
    out[ok] = t_s[ok] - t_s[last[ok]]
    return out


def _time_until(t_s: np.ndarray, mark: np.ndarray) -> np.ndarray:
    rev = _time_since(-t_s[::-1], mark[::-1])
    return rev[::-1]


def _lane_geometry(
    v: np.ndarray, yaw: np.ndarray, dt: float, half: int, edge: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(v)
    offset = np.full(n, np.nan)
    dpsi = np.full(n, np.nan)
    peak = np.full(n, np.nan)
    edge_dev = np.full(n, np.nan)
    edge = min(max(edge, 1), half)
    if n < 2 * half + 1 or half < 1:
        return offset, dpsi, peak, edge_dev
    bad = ~(np.isfinite(v) & np.isfinite(yaw))
    vv = np.where(bad, 0.0, v)
    # heading by integrating the yaw rate: psi[k] = sum_{j<k} yaw_j dt
    psi = np.concatenate([[0.0], np.cumsum(np.where(bad, 0.0, yaw)[:-1] * dt)])
    centres = np.arange(half, n - half)
    s, e = centres - half, centres + half
    ps = psi[s]
    # road curvature: mean yaw rate over the first and the last `edge` samples of the window;
    # headings are taken relative to a road that keeps turning at that mean rate
    r1 = (psi[s + edge] - ps) / (edge * dt)
    r2 = (psi[e] - psi[e - edge]) / (edge * dt)
    rbar = 0.5 * (r1 + r2)
    k = np.arange(n, dtype=np.float64)
    pre = lambda x: np.concatenate([[0.0], np.cumsum(x)])  # noqa: E731
    pa_, pb_, pc_ = pre(vv * psi), pre(vv), pre(vv * k)
    sum_vpsi, sum_v, sum_vk = pa_[e] - pa_[s], pb_[e] - pb_[s], pc_[e] - pc_[s]
    # small-angle lateral displacement in the road frame: sum v * (psi - psi_s - rbar*(k-s)*dt) * dt
    offset[centres] = dt * (sum_vpsi - ps * sum_v) - rbar * dt * dt * (sum_vk - s * sum_v)
    dpsi[centres] = psi[e] - ps - rbar * (e - s) * dt
    edge_dev[centres] = 0.5 * np.abs(r1 - r2) * edge * dt
    width = 2 * half + 1
    win = np.lib.stride_tricks.sliding_window_view(psi, width)
    ramp = np.arange(width, dtype=np.float64) * dt
    chunk = max(1, 2_000_000 // width)
    for c0 in range(0, len(centres), chunk):
        sl = slice(c0, c0 + chunk)
        rel = win[s[sl]] - ps[sl, None] - rbar[sl, None] * ramp[None, :]
        peak[centres[sl]] = np.abs(rel).max(axis=1)
    badc = np.concatenate([[0], np.cumsum(bad.astype(np.int64))])
    has_bad = (badc[e + 1] - badc[s]) > 0
    for arr in (offset, dpsi, peak, edge_dev):
        arr[centres[has_bad]] = np.nan
    return offset, dpsi, peak, edge_dev


def _lane_signals(v: np.ndarray, yaw: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lane geometry over each window of LANE_WINDOWS_S; per sample keep the window whose heading is
    most consistent at both ends relative to its heading excursion, i.e. with the smallest
    (edge + |change|) / peak. Short windows catch manoeuvres on roads whose curvature changes soon
    after; long windows catch slow (up to ~6 s) lane changes."""
    rate = 1.0 / dt
    edge = int(round(LANE_EDGE_S * rate))
    best: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    best_score = np.full(len(v), np.inf)
    for w in LANE_WINDOWS_S:
        off, dpsi, peak, edge_dev = _lane_geometry(v, yaw, dt, int(round(w / 2 * rate)), edge)
        with np.errstate(invalid="ignore", divide="ignore"):
            score = (edge_dev + np.abs(dpsi)) / peak
        score = np.where(np.isfinite(score), score, np.inf)
        if best is None:
            best = (off, dpsi, peak, edge_dev)
            best_score = score
            continue
        take = score < best_score
        best = tuple(np.where(take, new, old) for new, old in zip((off, dpsi, peak, edge_dev), best))  # type: ignore[assignment]
        best_score = np.where(take, score, best_score)
    assert best is not None
    return best


def _bool_np(df: pl.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    s = df.get_column(name)
    return s.fill_null(False).to_numpy().astype(bool), s.is_not_null().to_numpy().astype(bool)


def _yaw_rate(base: pl.DataFrame, v: np.ndarray, steer: np.ndarray, dt: float) -> np.ndarray:
    """Yaw rate: the measured one, else from the heading's change (above a minimum speed), else from
    the steering angle (bicycle model)."""
    heading = _np(base, "heading_rad")
    hok = np.isfinite(heading)
    unwrapped = np.full(len(v), np.nan)
    if hok.any():
        unwrapped[hok] = np.unwrap(heading[hok])
    yaw_from_heading = -_gradient(unwrapped, dt)
    yaw_from_heading[~(np.abs(v) > HEADING_MIN_SPEED_MPS)] = np.nan
    yaw_col = _np(base, "yaw_rate_radps")
    yaw_from_steering = v * np.tan(steer / STEER_RATIO) / WHEELBASE_M
    return np.where(np.isfinite(yaw_col), yaw_col, np.where(np.isfinite(yaw_from_heading), yaw_from_heading, yaw_from_steering))


def _assist_transitions(base: pl.DataFrame, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(disengaged, engaged now, seconds since the last change) of ``driver_assist_engaged``: the
    state forward-filled over nulls and compared with the previous known state."""
    eng, eng_ok = _bool_np(base, "driver_assist_engaged")
    idx = np.where(eng_ok, np.arange(len(eng)), -1)
    last = np.maximum.accumulate(idx)
    prev_last = np.concatenate([[-1], last[:-1]])
    prev_state = np.where(prev_last >= 0, eng[np.maximum(prev_last, 0)], False)
    changed = eng_ok & (prev_last >= 0) & (eng != prev_state)
    return changed & prev_state & ~eng, changed & ~prev_state & eng, _time_since(t_s, changed)


def derive(df: pl.DataFrame, *, drive_start_ns: int | None = None) -> pl.DataFrame:
    """Add the derived signals of :data:`DERIVED_DOC` to a frame from :func:`resample`.

    Returns exactly the columns of :data:`DERIVED_SCHEMA`, in that order.
    """
    missing = [c for c in ("t_ns", "speed_mps") if c not in df.columns]
    if missing:
        raise ValueError(f"derive needs a resampled telemetry frame; missing columns {missing}")
    base = df
    for name in (*_CANONICAL, "gap", "gps_jump_m", "gps_missing"):
        if name not in base.columns:
            default = False if name in ("gap", "gps_missing") else None
            base = base.with_columns(pl.lit(default, dtype=DERIVED_SCHEMA[name]).alias(name))
    n = base.height
    t = base.get_column("t_ns").to_numpy().astype(np.int64)
    if n == 0:
        return pl.DataFrame(schema=DERIVED_SCHEMA)
    dt = float(np.median(np.diff(t))) / NS_PER_S if n > 1 else 1.0 / 20.0
    rate = 1.0 / dt
    start = int(t[0]) if drive_start_ns is None else int(drive_start_ns)
    t_s = (t - start).astype(np.float64) / NS_PER_S
    sw = 2 * int(round(SMOOTH_S / 2 * rate)) + 1

    v = _np(base, "speed_mps")
    acc_col = _np(base, "accel_lon_mps2")
    accel_lon = _smooth(np.where(np.isfinite(acc_col), acc_col, _gradient(v, dt)), sw)

    steer = _np(base, "steering_angle_rad")
    yaw = _yaw_rate(base, v, steer, dt)

    lat_col = _np(base, "accel_lat_mps2")
    accel_lat = _smooth(np.where(np.isfinite(lat_col), lat_col, v * yaw), sw)
    jerk = _gradient(accel_lon, dt)
    steering_rate = _smooth(_gradient(steer, dt), sw)
    shadow_diff = np.abs(_np(base, "shadow_steering_angle_rad") - _np(base, "steering_angle_rad"))

    disengaged, engaged_now, since_change = _assist_transitions(base, t_s)

    vok = np.isfinite(v)
    stopped = np.where(vok, v < STOPPED_MPS, False)
    moving = vok & (v >= MOVING_MPS)
    since_moving = _time_since(t_s, moving)
    until_moving = _time_until(t_s, moving)

    lane_off, lane_dpsi, lane_peak, lane_edge = _lane_signals(v, yaw, dt)

    def f(x: np.ndarray) -> pl.Series:
        return pl.Series(values=x, dtype=pl.Float64, nan_to_null=True)

    out = base.with_columns(
        t_s=f(t_s),
        speed_kmh=f(v * 3.6),
        accel_lon=f(accel_lon),
        accel_lat=f(accel_lat),
        jerk=f(jerk),
        yaw_rate=f(yaw),
        steering_rate=f(steering_rate),
        since_assist_change_s=f(since_change),
        assist_disengaged=pl.Series(values=disengaged, dtype=pl.Boolean),
        assist_engaged_now=pl.Series(values=engaged_now, dtype=pl.Boolean),
        shadow_steer_diff=f(shadow_diff),
        stopped=pl.Series(values=pa.array(stopped, type=pa.bool_(), mask=~vok)),
        since_moving_s=f(since_moving),
        until_moving_s=f(until_moving),
        lane_offset_m=f(lane_off),
        lane_heading_change_rad=f(lane_dpsi),
        lane_heading_peak_rad=f(lane_peak),
        lane_heading_edge_rad=f(lane_edge),
    )
    return out.select([pl.col(k).cast(dt_) for k, dt_ in DERIVED_SCHEMA.items()])


def derived_frame(
    telemetry: pa.Table | pl.DataFrame,
    *,
    rate_hz: float = 20.0,
    max_gap_s: float = 0.5,
    drive_start_ns: int | None = None,
) -> pl.DataFrame:
    """``derive(resample(telemetry))`` in one call."""
    return derive(resample(telemetry, rate_hz=rate_hz, max_gap_s=max_gap_s), drive_start_ns=drive_start_ns)


def empty_derived() -> pl.DataFrame:
    """An empty frame with the derived schema (used to validate trigger predicates)."""
    return pl.DataFrame(schema=DERIVED_SCHEMA)
