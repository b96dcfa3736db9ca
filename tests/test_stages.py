"""fleetcore.stages.run_stages: read-only stages run beside the frame-editing ones on a snapshot and
the result equals running them one after the other (frames, record, rows, errors)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fleetcore.errors import FleetError
from fleetcore.stages import run_stages
from fleetcore.video.extract import ClipFrames


def make_clip() -> ClipFrames:
    rng = np.random.default_rng(0)
    shared = rng.integers(0, 255, (36, 64, 3), dtype=np.uint8)
    frames = {"front": [rng.integers(0, 255, (36, 64, 3), dtype=np.uint8), shared, shared, None],
              "rear": [rng.integers(0, 255, (36, 64, 3), dtype=np.uint8) for _ in range(4)]}
    return ClipFrames(np.arange(4, dtype=np.int64), ["front", "rear"], frames, pts_ns={}, offset_ns={})


class Reader:
    """Reads every frame (slowly enough that the editor runs meanwhile) and records what it saw."""

    name = "reader"
    frames_read_only = True

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[bytes] = []
        self.thread: str | None = None
        self.started = threading.Event()

    def __call__(self, *, clip, telemetry, drive, record):
        self.thread = threading.current_thread().name
        self.started.set()
        for cam in clip.cameras:
            for f in clip.frames[cam]:
                self.seen.append(b"" if f is None else f.tobytes())
        if self.fail:
            raise FleetError("reader failed")
        record["reader"] = {"frames": len(self.seen)}
        return [{"label": "read", "value": str(len(self.seen))}]


class Editor:
    """Copy on write: replaces every frame with an inverted copy (waits until the reader started)."""

    name = "editor"

    def __init__(self, reader: Reader | None = None, fail: bool = False) -> None:
        self.reader = reader
        self.fail = fail

    def __call__(self, *, clip, telemetry, drive, record):
        if self.reader is not None:
            self.reader.started.wait(5)
        for cam in clip.cameras:
            fs = clip.frames[cam]
            with pytest.raises(ValueError):  # the frames are handed over read-only
                next(f for f in fs if f is not None)[0, 0, 0] = 0
            copies: dict[int, np.ndarray] = {}
            for i, f in enumerate(fs):
                if f is not None:
                    fs[i] = copies.setdefault(id(f), 255 - f)
        if self.fail:
            raise FleetError("editor failed")
        record["editor"] = True
        return [{"label": "edited", "value": "yes"}]


def test_read_only_stage_runs_beside_and_sees_the_frames_it_would_see_in_order():
    clip = make_clip()
    originals = {c: [None if f is None else f.copy() for f in fs] for c, fs in clip.frames.items()}
    reader = Reader()
    record: dict = {"clip_id": "c"}
    rows = run_stages([reader, Editor(reader)], clip=clip, telemetry={}, drive=None, record=record)
    assert reader.thread != threading.current_thread().name  # it ran on a second thread
    assert reader.seen == [b"" if f is None else f.tobytes() for c in ("front", "rear") for f in originals[c]]  # unedited frames
    for c, fs in clip.frames.items():  # the editor's copies are what the clip carries on
        for f, o in zip(fs, originals[c]):
            assert (f is None and o is None) or np.array_equal(f, 255 - o)
    assert clip.frames["front"][1] is clip.frames["front"][2]
    assert record == {"clip_id": "c", "reader": {"frames": 8}, "editor": True}
    assert rows == [{"label": "read", "value": "8"}, {"label": "edited", "value": "yes"}]  # stage order

    # the same as one after the other (a read-only stage last has nothing to run beside)
    clip2 = make_clip()
    record2: dict = {"clip_id": "c"}
    rows2 = run_stages([Reader(), Editor()], clip=clip2, telemetry={}, drive=None, record=record2)
    rows3 = run_stages([Reader()], clip=make_clip(), telemetry={}, drive=None, record={"clip_id": "c"})
    assert rows2 == rows and record2 == record and rows3 == rows[:1]


@pytest.mark.parametrize(("reader_fails", "editor_fails", "message"), [(True, False, "reader"), (False, True, "editor"), (True, True, "reader")])
def test_first_error_in_stage_order_is_raised(reader_fails, editor_fails, message):
    reader = Reader(fail=reader_fails)
    record: dict = {"clip_id": "c"}
    with pytest.raises(FleetError, match=f"{message} failed"):
        run_stages([reader, Editor(reader, fail=editor_fails)], clip=make_clip(), telemetry={}, drive=None, record=record)
