"""Keyframe perceptual hashes (label ``phash``), the input of :func:`fleetcore.labels.dedup.mark_near_duplicates`."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fleetcore.labels.dedup import KEYFRAMES, clip_hashes
from fleetcore.labels.base import LabelValue, primary_camera, register_labeller


@register_labeller
class PhashLabeller:
    name = "phash"
    version = "1"

    def __init__(self) -> None:
        # imagehash and the scipy.fftpack its phash imports on first use take ~0.25 s: import them
        # when the stage is built (DoFn.setup), not inside the first clip
        import imagehash  # noqa: F401
        import scipy.fftpack  # noqa: F401

    def label(self, clip: Any, telemetry: Mapping[str, np.ndarray], *, start_utc_ns: int) -> dict[str, LabelValue]:
        cam = primary_camera(clip)
        return {"phash": clip_hashes(clip, cam, KEYFRAMES), "phash_camera": cam or "none"}
