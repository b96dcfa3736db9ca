"""OpenCV rendering of simulated camera frames, and the machine-readable frame marker.

The scene is a ground plane (road with 5 lanes of 3.5 m, dashed lane lines, solid edge lines,
striped verge), a sky gradient, other vehicles (boxes with rear/head lights), roadside poles
(street lights at night) and, now and then, groups of pedestrians on the verge. The ground is
ray-cast per pixel at half resolution from per-camera precomputed ground coordinates (the
camera geometry is static), then upscaled; objects are drawn at full resolution.

Frame marker
------------
The bottom-right corner carries a 2 x 8 grid of black/white blocks: a 16-bit number, most
significant bit first, row by row. Block size is ``width / 64`` (10 px at 640 px width), the
grid sits ``block / 2`` from the right and bottom edges. The number is::

    marker_value(t_ns) = round(t_ns / 10_000_000) mod 65536

i.e. the frame's vehicle-clock presentation time in units of 10 ms, modulo 2**16 (wraps every
655.36 s). :func:`decode_marker` reads it back from a decoded BGR frame of any size with the
original aspect ratio (it samples the centre of each block, so it survives JPEG and resizing).
The marker is drawn after every effect (blocked/blurred camera, night), so it is always readable.
Nothing else (no timestamps, no text) is burnt into the frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

MARKER_BITS = 16
MARKER_COLS = 8
MARKER_ROWS = 2
MARKER_UNIT_NS = 10_000_000


# --------------------------------------------------------------------------------------
# Marker
# --------------------------------------------------------------------------------------
def marker_value(t_ns: int) -> int:
    """The number the marker encodes for a frame at vehicle-clock time ``t_ns``."""
    return int(round(t_ns / MARKER_UNIT_NS)) % (1 << MARKER_BITS)


def _marker_cells(width: int, height: int) -> list[tuple[float, float, float, float]]:
    b = width / 64.0
    x0 = width - b / 2 - MARKER_COLS * b
    y0 = height - b / 2 - MARKER_ROWS * b
    cells = []
    for i in range(MARKER_BITS):
        r, c = divmod(i, MARKER_COLS)
        cells.append((x0 + c * b, y0 + r * b, x0 + (c + 1) * b, y0 + (r + 1) * b))
    return cells


def draw_marker(frame: np.ndarray, value: int) -> None:
    """Draw ``value`` (0..65535) into the bottom-right corner of a BGR frame, in place."""
    h, w = frame.shape[:2]
    for i, (x0, y0, x1, y1) in enumerate(_marker_cells(w, h)):
        bit = (value >> (MARKER_BITS - 1 - i)) & 1
        frame[int(round(y0)) : int(round(y1)), int(round(x0)) : int(round(x1))] = 255 if bit else 0


def decode_marker(frame_bgr: np.ndarray) -> int:
    """Read the 16-bit frame marker: the frame time in 10 ms units, mod 65536 (see module doc).

    Raises ValueError if a block is neither clearly black nor clearly white.
    """
    if frame_bgr.ndim == 3:
        gray = frame_bgr.mean(axis=2)
    else:
        gray = frame_bgr.astype(np.float64)
    h, w = gray.shape[:2]
    value = 0
    for i, (x0, y0, x1, y1) in enumerate(_marker_cells(w, h)):
        bw, bh = x1 - x0, y1 - y0
        xa, xb = int(round(x0 + 0.3 * bw)), int(round(x1 - 0.3 * bw))
        ya, yb = int(round(y0 + 0.3 * bh)), int(round(y1 - 0.3 * bh))
        xb, yb = max(xb, xa + 1), max(yb, ya + 1)
        m = float(gray[ya:yb, xa:xb].mean())
        if 70.0 < m < 185.0:
            raise ValueError(f"frame marker block {i} is ambiguous (mean gray {m:.0f}); expected near 0 or 255")
        value = (value << 1) | int(m >= 128.0)
    return value


# --------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraSpec:
    name: str
    yaw_deg: float  # viewing direction, 0 = forward, +90 = left, 180 = rear
    hfov_deg: float
    x: float  # position in the ego frame: x right, y up, z forward (m)
    y: float
    z: float
    horizon: float = 0.45  # principal point row as a fraction of height


DEFAULT_CAMERAS: dict[str, CameraSpec] = {
    "front": CameraSpec("front", 0.0, 90.0, 0.0, 1.4, 1.8),
    "left": CameraSpec("left", 70.0, 100.0, -0.9, 1.2, 1.0),
    "right": CameraSpec("right", -70.0, 100.0, 0.9, 1.2, 1.0),
    "rear": CameraSpec("rear", 180.0, 100.0, 0.0, 1.0, -2.3, 0.4),
    "front_wide": CameraSpec("front_wide", 0.0, 120.0, 0.0, 1.4, 1.8),
    "front_narrow": CameraSpec("front_narrow", 0.0, 45.0, 0.0, 1.4, 1.8, 0.48),
    "left_repeater": CameraSpec("left_repeater", 150.0, 80.0, -1.0, 1.0, 1.2),
    "right_repeater": CameraSpec("right_repeater", -150.0, 80.0, 1.0, 1.0, 1.2),
}
DEFAULT_CAMERA_ORDER = ("front", "left", "right", "rear", "front_wide", "front_narrow", "left_repeater", "right_repeater")


def camera_spec(name: str) -> CameraSpec:
    """Geometry for a camera name: a known name, else guessed from words in it (rear/left/right)."""
    if name in DEFAULT_CAMERAS:
        return DEFAULT_CAMERAS[name]
    base = DEFAULT_CAMERAS["front"]
    for word in ("rear", "back"):
        if word in name:
            base = DEFAULT_CAMERAS["rear"]
    if "left" in name:
        base = DEFAULT_CAMERAS["left"]
    elif "right" in name:
        base = DEFAULT_CAMERAS["right"]
    return CameraSpec(name, base.yaw_deg, base.hfov_deg, base.x, base.y, base.z, base.horizon)


class CameraModel:
    """Pinhole projection for one camera at a given image size."""

    def __init__(self, spec: CameraSpec, width: int, height: int) -> None:
        self.spec = spec
        self.w, self.h = width, height
        self.f = (width / 2) / math.tan(math.radians(spec.hfov_deg) / 2)
        self.cx, self.cy = width / 2, height * spec.horizon
        psi = math.radians(spec.yaw_deg)
        self.fwd = np.array([-math.sin(psi), 0.0, math.cos(psi)])
        self.right = np.array([math.cos(psi), 0.0, math.sin(psi)])
        self.up = np.array([0.0, 1.0, 0.0])
        self.pos = np.array([spec.x, spec.y, spec.z])

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,3) ego-frame points -> (N,2) pixel coords and camera depth (N,)."""
        d = pts - self.pos
        xc, yc, zc = d @ self.right, d @ self.up, d @ self.fwd
        zs = np.where(zc > 1e-3, zc, 1e-3)
        uv = np.stack([self.cx + self.f * xc / zs, self.cy - self.f * yc / zs], axis=1)
        return uv, zc

    def ground_maps(self, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ego-frame ground coordinates (X right, Z forward) for every pixel of a w x h image (same FOV)."""
        s = w / self.w
        f, cx, cy = self.f * s, self.cx * s, self.cy * s
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        xn, yn = (u - cx) / f, -(v - cy) / f
        dirs = xn[..., None] * self.right + yn[..., None] * self.up + self.fwd
        dy = dirs[..., 1]
        ground = dy < -1e-4
        tt = np.where(ground, self.pos[1] / np.where(ground, -dy, 1.0), 0.0)
        X = self.pos[0] + tt * dirs[..., 0]
        Z = self.pos[2] + tt * dirs[..., 2]
        dist = tt * np.linalg.norm(dirs, axis=-1)
        ground &= dist < 400.0
        return X.astype(np.float32), Z.astype(np.float32), ground


# --------------------------------------------------------------------------------------
# Palettes
# --------------------------------------------------------------------------------------
PALETTES: dict[str, dict[str, Any]] = {
    "day": {
        "sky_top": (235, 175, 110), "sky_hor": (250, 228, 205), "asphalt": (92, 92, 96), "line": (230, 232, 232),
        "grass_a": (70, 150, 80), "grass_b": (58, 132, 68), "ambient": 1.0, "tint": (1.0, 1.0, 1.0), "haze": (210, 205, 200),
    },
    "dusk": {
        "sky_top": (120, 70, 80), "sky_hor": (90, 150, 240), "asphalt": (88, 88, 94), "line": (220, 225, 228),
        "grass_a": (70, 140, 80), "grass_b": (58, 124, 68), "ambient": 0.6, "tint": (0.85, 0.95, 1.1), "haze": (110, 120, 150),
    },
    "night": {
        "sky_top": (28, 12, 8), "sky_hor": (55, 38, 32), "asphalt": (92, 92, 96), "line": (235, 235, 235),
        "grass_a": (70, 140, 80), "grass_b": (58, 124, 68), "ambient": 0.13, "tint": (1.0, 1.0, 1.0), "haze": (40, 30, 28),
    },
}
ROAD_HALF_M = 8.75  # 5 lanes
POLE_SPACING_M = 35.0
POLE_Q_M = 10.3


@dataclass
class OtherVehicle:
    lane: int  # lane index, positive left of the road centre
    z0: float  # mean ego-relative along-track distance (m)
    amp: float
    period_s: float
    phase: float
    color: tuple[int, int, int]

    def z(self, t_s: float) -> float:
        return self.z0 + self.amp * math.sin(2 * math.pi * t_s / self.period_s + self.phase)


@dataclass
class PedestrianGroup:
    s_m: float  # along-track position of the group (distance coordinate)
    q_m: float  # lateral road coordinate (m, positive right)
    count: int
    colors: list[tuple[int, int, int]]


@dataclass
class FrameState:
    t_s: float  # seconds since the drive start
    distance_m: float
    road_k: float
    lane_offset_m: float
    speed: float


class CameraRenderer:
    def __init__(self, spec: CameraSpec, width: int, height: int, tod: str) -> None:
        self.cam = CameraModel(spec, width, height)
        self.w, self.h = width, height
        self.hw, self.hh = max(2, width // 2), max(2, height // 2)
        X, Z, ground = self.cam.ground_maps(self.hw, self.hh)
        self.ground = ground
        self.gX, self.gZ = X[ground], Z[ground]
        self.gd = np.hypot(self.gX, self.gZ)
        self.pal = PALETTES[tod]
        self.tod = tod
        # sky gradient (computed with the camera's vertical direction)
        rows = (np.arange(self.hh) + 0.5) / self.hh
        hor = self.cam.cy / self.h
        frac = np.clip(rows / max(hor, 1e-3), 0.0, 1.0)[:, None]
        top, bot = np.array(self.pal["sky_top"], np.float32), np.array(self.pal["sky_hor"], np.float32)
        sky = (top * (1 - frac) + bot * frac)[:, None, :] * np.ones((1, self.hw, 1), np.float32)
        self.sky = sky.astype(np.uint8)
        # static lighting (headlights) on the ground
        amb = self.pal["ambient"]
        light = np.full(self.gX.shape, amb, np.float32)
        if tod == "night":
            gz, gx = self.gZ, self.gX
            cone = (gz > 2.0) & (np.abs(gx) < 0.35 * gz + 1.5)
            light += np.where(cone, 1.1 * np.exp(-np.maximum(gz - 8.0, 0.0) / 22.0), 0.0).astype(np.float32)
            back = (gz < -2.0) & (np.abs(gx) < 0.4 * (-gz) + 1.0)
            light += np.where(back, 0.25 * np.exp(-np.maximum(-gz - 3.0, 0.0) / 6.0), 0.0).astype(np.float32)
        # haze with distance
        self.haze_w = np.clip(self.gd / 380.0, 0.0, 1.0).astype(np.float32)[:, None]
        self.light = light
        self.colors = np.array(
            [self.pal["grass_a"], self.pal["grass_b"], self.pal["asphalt"], self.pal["line"]], np.float32
        ) * np.array(self.pal["tint"], np.float32)
        self.haze = np.array(self.pal["haze"], np.float32)
        self.scale = width / 640.0
        self.lit_a = (self.light[:, None] * (1 - self.haze_w)).astype(np.float32)
        self.lit_b = (self.haze * self.haze_w).astype(np.float32)

    # ---- background ------------------------------------------------------------------
    def _background(self, st: FrameState) -> np.ndarray:
        X, Z = self.gX, self.gZ
        q = X - st.lane_offset_m + 0.5 * st.road_k * Z * Z
        zs = Z + st.distance_m
        aq = np.abs(q)
        on_road = aq <= ROAD_HALF_M + 0.5
        r = np.mod(q, 3.5)
        dash = np.mod(zs, 12.0) < 4.0
        lane_line = (np.abs(r - 1.75) < 0.11) & dash & (aq < ROAD_HALF_M - 1.0)
        edge = np.abs(aq - ROAD_HALF_M) < 0.11
        stripe = np.mod(zs + 0.3 * q, 8.0) < 4.0
        cls = np.where(on_road, np.where(lane_line | edge, 3, 2), np.where(stripe, 0, 1))
        col = self.colors[cls]
        light = self.light
        if self.tod == "night":
            ph = np.mod(zs, POLE_SPACING_M) - POLE_SPACING_M / 2
            side = np.sign(np.mod(np.floor(zs / POLE_SPACING_M), 2) - 0.5)
            dq = q - side * POLE_Q_M
            light = light + 0.9 * np.exp(-(ph * ph + dq * dq) / 60.0).astype(np.float32)
        if light is self.light:
            col = col * self.lit_a + self.lit_b
        else:
            col = col * (light[:, None] * (1 - self.haze_w)) + self.lit_b
        img = self.sky.copy()
        img[self.ground] = np.clip(col, 0, 255).astype(np.uint8)
        return cv2.resize(img, (self.w, self.h), interpolation=cv2.INTER_LINEAR)

    # ---- objects -----------------------------------------------------------------------
    def _road_x(self, st: FrameState, z: float, q: float) -> float:
        """Ego-frame X of road coordinate (along z ahead, lateral q right of the road centre)."""
        return st.lane_offset_m - 0.5 * st.road_k * z * z + q

    def _draw_poles(self, img: np.ndarray, st: FrameState) -> None:
        first = math.floor((st.distance_m - 60) / POLE_SPACING_M)
        for k in range(first, first + int(300 / POLE_SPACING_M) + 2):
            s = k * POLE_SPACING_M + POLE_SPACING_M / 2
            z = s - st.distance_m
            side = 1.0 if k % 2 else -1.0
            x = self._road_x(st, z, side * POLE_Q_M)
            pts = np.array([[x, 0.0, z], [x, 6.0, z], [x - side * 1.2, 6.0, z]])
            uv, zc = self.cam.project(pts)
            if (zc < 0.8).any() or zc.min() > 250:
                continue
            th = max(1, int(round(0.2 * self.cam.f / zc[0])))
            p = [tuple(int(round(c)) for c in u) for u in uv]
            cv2.line(img, p[0], p[1], (60, 60, 60) if self.tod != "night" else (30, 30, 30), th, cv2.LINE_AA)
            cv2.line(img, p[1], p[2], (60, 60, 60) if self.tod != "night" else (30, 30, 30), max(1, th // 2), cv2.LINE_AA)
            if self.tod == "night":
                rad = max(2, int(round(0.6 * self.cam.f / zc[2])))
                cv2.circle(img, p[2], rad * 2, (90, 160, 200), -1, cv2.LINE_AA)
                cv2.circle(img, p[2], rad, (200, 245, 255), -1, cv2.LINE_AA)

    def _draw_vehicle(self, img: np.ndarray, st: FrameState, ov: OtherVehicle) -> None:
        z = ov.z(st.t_s)
        x = self._road_x(st, z, -ov.lane * 3.5)
        w2, hgt, ln = 0.9, 1.5, 4.3
        corners = np.array(
            [[x + dx, yy, z + dz] for dx in (-w2, w2) for yy in (0.2, hgt) for dz in (0.0, ln)]
        )
        uv, zc = self.cam.project(corners)
        if (zc < 0.8).any() or zc.max() > 200:
            return
        if (uv[:, 0].max() < 0) or (uv[:, 0].min() > self.w) or (uv[:, 1].max() < 0) or (uv[:, 1].min() > self.h):
            return
        hull = cv2.convexHull(np.round(uv).astype(np.int32))
        night = self.tod == "night"
        body = tuple(int(c * (0.35 if night else 1.0)) for c in ov.color)
        cv2.fillConvexPoly(img, hull, body, cv2.LINE_AA)
        # window band
        win = np.array([[x - w2 * 0.8, hgt * 0.92, z], [x + w2 * 0.8, hgt * 0.92, z], [x + w2 * 0.8, hgt * 0.65, z], [x - w2 * 0.8, hgt * 0.65, z]])
        cam_z = self.cam.pos[2]
        if cam_z < z:  # we see its back: rear lights
            wuv, _ = self.cam.project(win)
            cv2.fillConvexPoly(img, np.round(wuv).astype(np.int32), (40, 35, 30), cv2.LINE_AA)
            lights = [[x - w2 * 0.8, 0.8, z], [x + w2 * 0.8, 0.8, z]]
            color, glow = (40, 40, 230) if not night else (90, 90, 255), (30, 30, 160)
        elif cam_z > z + ln:  # we see its front: headlights
            lights = [[x - w2 * 0.75, 0.7, z + ln], [x + w2 * 0.75, 0.7, z + ln]]
            color, glow = (200, 230, 235) if not night else (235, 250, 255), (150, 190, 200)
        else:
            return
        luv, lz = self.cam.project(np.array(lights))
        rad = max(1, int(round(0.13 * self.cam.f / max(lz.min(), 0.8))))
        for p in luv:
            c = (int(round(p[0])), int(round(p[1])))
            if night:
                cv2.circle(img, c, rad * 3, glow, -1, cv2.LINE_AA)
            cv2.circle(img, c, rad, color, -1, cv2.LINE_AA)

    def pedestrians_visible(self, st: FrameState, grp: PedestrianGroup) -> bool:
        """True when the group stands in view, close enough to be seen (>= 6 % of the image height)."""
        z = grp.s_m - st.distance_m
        x = self._road_x(st, z, grp.q_m)
        uv, zc = self.cam.project(np.array([[x, 0.0, z], [x, 1.75, z]]))
        if zc.min() < 1.5:
            return False
        hpx = uv[0, 1] - uv[1, 1]
        return bool(hpx >= 0.06 * self.h and 0 <= uv[0, 0] < self.w and 0 <= uv[1, 1] and uv[0, 1] < self.h)

    def _draw_pedestrians(self, img: np.ndarray, st: FrameState, grp: PedestrianGroup) -> None:
        night = self.tod == "night"
        for i in range(grp.count):
            z = grp.s_m - st.distance_m + 0.9 * i
            q = grp.q_m + 0.7 * (i % 2) * (1 if grp.q_m > 0 else -1)
            x = self._road_x(st, z, q)
            pts = np.array([[x, 1.62, z], [x, 1.45, z], [x, 0.85, z], [x - 0.18, 0.0, z], [x + 0.18, 0.0, z], [x - 0.3, 1.0, z], [x + 0.3, 1.0, z]])
            uv, zc = self.cam.project(pts)
            if zc.min() < 1.0 or zc.max() > 120:
                continue
            p = [(int(round(a)), int(round(b))) for a, b in uv]
            if p[2][0] < -50 or p[2][0] > self.w + 50:
                continue
            scale = self.cam.f / zc[0]
            th = max(1, int(round(0.14 * scale)))
            swing = 0.12 * math.sin(2 * math.pi * 1.5 * st.t_s + i)
            legs = np.array([[x - swing, 0.0, z], [x + swing, 0.0, z]])
            luv, _ = self.cam.project(legs)
            col = grp.colors[i % len(grp.colors)]
            if night:
                col = tuple(int(c * 0.5) for c in col)
            skin = (80, 110, 150) if not night else (50, 60, 80)
            cv2.line(img, p[1], p[2], col, th + 1, cv2.LINE_AA)
            cv2.line(img, p[1], p[5], col, max(1, th // 2 + 1), cv2.LINE_AA)
            cv2.line(img, p[1], p[6], col, max(1, th // 2 + 1), cv2.LINE_AA)
            for lp in luv:
                cv2.line(img, p[2], (int(round(lp[0])), int(round(lp[1]))), (50, 40, 40), th, cv2.LINE_AA)
            cv2.circle(img, p[0], max(1, int(round(0.12 * scale))), skin, -1, cv2.LINE_AA)

    def render(
        self,
        st: FrameState,
        vehicles: Sequence[OtherVehicle],
        peds: Sequence[PedestrianGroup],
        effect: str | None,
        effect_rng_seed: int,
        marker: int,
    ) -> np.ndarray:
        img = self._background(st)
        self._draw_poles(img, st)
        objs: list[tuple[float, str, Any]] = []
        for ov in vehicles:
            objs.append((abs(ov.z(st.t_s) - self.cam.pos[2]), "v", ov))
        for g in peds:
            z = g.s_m - st.distance_m
            if -30 < z < 120:
                objs.append((abs(z - self.cam.pos[2]), "p", g))
        for _, kind, o in sorted(objs, key=lambda x: -x[0]):
            if kind == "v":
                self._draw_vehicle(img, st, o)
            else:
                self._draw_pedestrians(img, st, o)
        if effect == "camera_blurred":
            img = cv2.GaussianBlur(img, (0, 0), sigmaX=7.0 * self.scale)
        elif effect == "camera_blocked":
            img = self._blocked(img, effect_rng_seed)
        draw_marker(img, marker)
        return img

    def _blocked(self, img: np.ndarray, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        mask = np.zeros((self.h, self.w), np.float32)
        cx = int(self.w * rng.uniform(0.4, 0.6))
        cy = int(self.h * rng.uniform(0.4, 0.6))
        cv2.ellipse(mask, (cx, cy), (int(self.w * 0.62), int(self.h * 0.62)), float(rng.uniform(-20, 20)), 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=6 * self.scale)[..., None]
        dirt = np.array([14, 18, 22], np.float32) + rng.uniform(0, 6)
        return (img.astype(np.float32) * (1 - mask) + dirt * mask).astype(np.uint8)
