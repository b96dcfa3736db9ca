"""Model signals: a model's predictions put on a drive's derived telemetry grid (docs/loop.md).

A trigger with ``model: NAME@VERSION`` may use these columns beside the derived signals of
:mod:`fleetcore.triggers.signals`. :func:`add_model_signals` computes them for one drive from that
model's rows of the store's ``predictions`` table (``schemas.PREDICTIONS``):

* per-frame rows (``t_ns`` set) are matched to the nearest grid sample within ``tolerance_s``;
* per-clip rows (``t_ns`` null) hold over their clip's span ``[start_ns, end_ns]``;
* grid samples without a prediction are null (a predicate on them is false).

On a vehicle the same columns come from the model running in shadow mode (docs/campaigns.md).
Pure functions over Polars frames; nothing here reads files.
"""

from __future__ import annotations

import re
from typing import Final

import numpy as np
import polars as pl

from fleetcore.errors import ConfigError

NS_PER_S: Final = 1_000_000_000
MODEL_RE: Final = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]{0,63})@(?P<version>[A-Za-z0-9][A-Za-z0-9_.\-+]{0,63})$")
#: A per-frame prediction counts for grid samples within this many seconds of it.
DEFAULT_TOLERANCE_S: Final = 0.25
#: The catalog label a predicted class is compared with (``label_disagreement``) unless the trigger names another.
DEFAULT_LABEL: Final = "manoeuvre"

MODEL_SCHEMA: Final[dict[str, pl.DataType]] = {
    "pred_steering_angle_rad": pl.Float64(),
    "pred_speed_mps": pl.Float64(),
    "pred_accel_lon_mps2": pl.Float64(),
    "pred_score": pl.Float64(),
    "steer_error": pl.Float64(),
    "speed_error": pl.Float64(),
    "accel_error": pl.Float64(),
    "trajectory_error": pl.Float64(),
    "low_confidence": pl.Float64(),
    "label_disagreement": pl.Float64(),
}

MODEL_DOC: Final[dict[str, str]] = {
    "pred_steering_angle_rad": "the model's steering-wheel angle (rad, + = left)",
    "pred_speed_mps": "the model's speed (m/s)",
    "pred_accel_lon_mps2": "the model's longitudinal acceleration (m/s^2)",
    "pred_score": "the model's confidence (0..1) of its class",
    "steer_error": "|pred_steering_angle_rad - steering_angle_rad| (rad): the shadow-mode comparison",
    "speed_error": "|pred_speed_mps - speed_mps| (m/s)",
    "accel_error": "|pred_accel_lon_mps2 - accel_lon| (m/s^2)",
    "trajectory_error": "average displacement (m) between the predicted path (traj_x_m, traj_y_m every traj_dt_s, "
    "ego frame) and the driven path over the same horizon, dead-reckoned from speed_mps and yaw_rate",
    "low_confidence": "1 - pred_score",
    "label_disagreement": "1.0 where the predicted class differs from the clip's auto-label (model_label, default "
    "manoeuvre), 0.0 where it agrees",
}

MODEL_COLUMNS: Final[tuple[str, ...]] = tuple(MODEL_SCHEMA)


def parse_model(text: str, *, where: str = "model", field: str | None = "model") -> tuple[str, str]:
    """``NAME@VERSION`` -> (name, version) (raises ConfigError)."""
    m = MODEL_RE.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ConfigError(where, f"expected NAME@VERSION (letters, digits, _ . -), got {text!r}", field=field)
    return m.group("name"), m.group("version")


def empty_model_signals(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with every model column, null."""
    return df.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in MODEL_SCHEMA.items()])


def _driven_path(t_s: np.ndarray, v: np.ndarray, yaw: np.ndarray, i0: int, offsets_s: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Driven positions (ego frame at sample i0: x forward, y left) at ``offsets_s`` after it."""
    end_t = t_s[i0] + float(offsets_s[-1])
    if end_t > t_s[-1] + 1e-9:
        return None
    j1 = int(np.searchsorted(t_s, end_t, side="right"))
    ts, vs, ws = t_s[i0:j1 + 1] - t_s[i0], np.nan_to_num(v[i0:j1 + 1]), np.nan_to_num(yaw[i0:j1 + 1])
    if len(ts) < 2:
        return None
    dt = np.diff(ts)
    psi = np.concatenate([[0.0], np.cumsum(0.5 * (ws[1:] + ws[:-1]) * dt)])
    vx, vy = vs * np.cos(psi), vs * np.sin(psi)
    x = np.concatenate([[0.0], np.cumsum(0.5 * (vx[1:] + vx[:-1]) * dt)])
    y = np.concatenate([[0.0], np.cumsum(0.5 * (vy[1:] + vy[:-1]) * dt)])
    return np.interp(offsets_s, ts, x), np.interp(offsets_s, ts, y)


def _trajectory_errors(frames: pl.DataFrame, derived: pl.DataFrame) -> list[float | None]:
    t_ns = derived.get_column("t_ns").to_numpy()
    t_s = (t_ns - t_ns[0]) / NS_PER_S
    v = derived.get_column("speed_mps").cast(pl.Float64).fill_null(float("nan")).to_numpy()
    yaw = derived.get_column("yaw_rate").cast(pl.Float64).fill_null(float("nan")).to_numpy()
    out: list[float | None] = []
    for t, xs, ys, dt in frames.select("t_ns", "traj_x_m", "traj_y_m", "traj_dt_s").iter_rows():
        if t is None or xs is None or ys is None or not dt or len(xs) != len(ys) or not xs:
            out.append(None)
            continue
        i0 = int(np.searchsorted(t_ns, t))
        if i0 >= len(t_ns):
            out.append(None)
            continue
        got = _driven_path(t_s, v, yaw, i0, (np.arange(len(xs)) + 1) * float(dt))
        if got is None:
            out.append(None)
            continue
        out.append(float(np.mean(np.hypot(np.asarray(xs, float) - got[0], np.asarray(ys, float) - got[1]))))
    return out


def add_model_signals(
    derived: pl.DataFrame,
    predictions: pl.DataFrame,
    clips: pl.DataFrame,
    *,
    label: str = DEFAULT_LABEL,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> pl.DataFrame:
    """``derived`` (one drive's :func:`~fleetcore.triggers.signals.derived_frame`) with the columns of
    :data:`MODEL_SCHEMA` from ``predictions`` (one model's ``PREDICTIONS`` rows of that drive).
    ``clips`` holds the drive's catalog rows (``clip_id``, ``start_ns``, ``end_ns`` and ``label``, when the
    catalog has that column) for per-clip rows and ``label_disagreement``."""
    if derived.height == 0 or predictions.height == 0:
        return empty_model_signals(derived)
    grid = derived.select("t_ns")
    frames = predictions.filter(pl.col("t_ns").is_not_null()).sort("t_ns")
    per_clip = predictions.filter(pl.col("t_ns").is_null())
    n = derived.height
    cols: dict[str, np.ndarray] = {}
    if frames.height:
        traj = _trajectory_errors(frames, derived) if frames.get_column("traj_x_m").null_count() < frames.height else [None] * frames.height
        fr = frames.select(
            pl.col("t_ns").alias("_pt"),
            pl.col("steering_angle_rad").alias("pred_steering_angle_rad"),
            pl.col("speed_mps").alias("pred_speed_mps"),
            pl.col("accel_lon_mps2").alias("pred_accel_lon_mps2"),
            pl.col("score").alias("pred_score"),
            pl.Series("_traj", traj, dtype=pl.Float64),
        ).unique("_pt", keep="first").sort("_pt")
        j = grid.join_asof(fr, left_on="t_ns", right_on="_pt", strategy="nearest", tolerance=int(tolerance_s * NS_PER_S))
        for c in ("pred_steering_angle_rad", "pred_speed_mps", "pred_accel_lon_mps2", "pred_score"):
            cols[c] = j.get_column(c).cast(pl.Float64).fill_null(float("nan")).to_numpy()
        cols["trajectory_error"] = j.get_column("_traj").fill_null(float("nan")).to_numpy()

    disagree = np.full(n, np.nan)
    if per_clip.height:
        t = grid.get_column("t_ns").to_numpy()
        spans = clips.select("clip_id", "start_ns", "end_ns", *([label] if label in clips.columns else []))
        info = {r[0]: r for r in spans.iter_rows()}
        for row in per_clip.iter_rows(named=True):
            span = info.get(row["clip_id"])
            if span is None:
                continue
            inside = (t >= span[1]) & (t <= span[2])
            for src, dst in (("steering_angle_rad", "pred_steering_angle_rad"), ("speed_mps", "pred_speed_mps"),
                             ("accel_lon_mps2", "pred_accel_lon_mps2"), ("score", "pred_score")):
                if row.get(src) is not None:
                    vals = cols.get(dst, np.full(n, np.nan)).copy()
                    vals[inside & np.isnan(vals)] = float(row[src])
                    cols[dst] = vals
            if row.get("class_label") is not None and len(span) > 3 and span[3] is not None:
                differs = 1.0 if str(row["class_label"]) != str(span[3]) else 0.0
                disagree[inside] = np.fmax(disagree[inside], differs)
    cols["label_disagreement"] = disagree

    nan = np.full(n, np.nan)
    steer = derived.get_column("steering_angle_rad").cast(pl.Float64).fill_null(float("nan")).to_numpy()
    speed = derived.get_column("speed_mps").cast(pl.Float64).fill_null(float("nan")).to_numpy()
    accel = derived.get_column("accel_lon").cast(pl.Float64).fill_null(float("nan")).to_numpy()
    cols["steer_error"] = np.abs(cols.get("pred_steering_angle_rad", nan) - steer)
    cols["speed_error"] = np.abs(cols.get("pred_speed_mps", nan) - speed)
    cols["accel_error"] = np.abs(cols.get("pred_accel_lon_mps2", nan) - accel)
    cols["low_confidence"] = 1.0 - cols.get("pred_score", nan)
    out = [pl.Series(c, cols.get(c, nan), dtype=pl.Float64).fill_nan(None) for c in MODEL_SCHEMA]
    return derived.with_columns(out)
