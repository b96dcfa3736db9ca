"""Writing the pictures the query layer makes (contact sheets, coverage heatmaps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fleetcore.errors import FleetError
from fleetcore.store.fs import atomic_write_bytes

__all__ = ["write_png"]


def write_png(path: str | Path, image: np.ndarray, *, compression: int | None = None) -> Path:
    """Encode an image (BGR or grey uint8, as OpenCV takes it) as PNG (``compression`` 0-9, None:
    OpenCV's default) and write it atomically, making the folder. Returns the path."""
    import cv2

    ok, buf = cv2.imencode(".png", image, [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise FleetError(str(path), "PNG encoding failed", code="png_encode_failed")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(str(p), buf.tobytes())
    return p
