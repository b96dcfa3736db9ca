"""Output geometry of extracted frames."""

from __future__ import annotations


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) with the longest side == max_side, aspect kept, never upscaled."""
    if max_side <= 0:
        raise ValueError(f"max_side must be positive, found {max_side}")
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    s = max_side / longest
    return (max_side, max(1, round(height * s))) if width >= height else (max(1, round(width * s)), max_side)
