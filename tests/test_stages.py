"""fleetcore.stages.registry.run_stages: read-only stages run beside the frame-editing ones on a snapshot and
the result equals running them one after the other (frames, record, rows, errors)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fleetcore.errors import FleetError
from fleetcore.stages.registry import run_stages, run_stages_then
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
            raise FleetError("reader", "failed")
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
            raise FleetError("editor", "failed")
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
    with pytest.raises(FleetError, match=f"{message}: failed"):
        run_stages([reader, Editor(reader, fail=editor_fails)], clip=make_clip(), telemetry={}, drive=None, record=record)


class GatedReader(Reader):
    """A read-only stage that finishes only once ``gate`` is set (by the caller's ``then``)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(fail)
        self.gate = threading.Event()

    def __call__(self, *, clip, telemetry, drive, record):
        out = super().__call__(clip=clip, telemetry=telemetry, drive=drive, record=record)
        assert self.gate.wait(10), "then() was not called while the read-only stage was still running"
        return out


def test_then_runs_once_the_frames_are_final_while_the_read_only_stage_still_runs():
    clip = make_clip()
    reader = GatedReader()
    seen: list[np.ndarray] = []

    def then():
        # the editor is done (the frames are its copies), the reader is not (it waits for this gate)
        assert "reader" not in record and record["editor"] is True
        seen.extend(f for f in clip.frames["rear"])
        reader.gate.set()
        return "encoded"

    record: dict = {"clip_id": "c"}
    rows, got = run_stages_then([reader, Editor(reader)], then, clip=clip, telemetry={}, drive=None, record=record)
    assert got == "encoded"
    assert all(a is b for a, b in zip(seen, clip.frames["rear"]))  # then() saw the edited frames
    assert record == {"clip_id": "c", "reader": {"frames": 8}, "editor": True}
    assert rows == [{"label": "read", "value": "8"}, {"label": "edited", "value": "yes"}]
    # no stages: then() runs at once
    assert run_stages_then([], lambda: 7, clip=make_clip(), telemetry={}, drive=None, record={"clip_id": "c"}) == ([], 7)


def test_then_is_skipped_when_a_stage_fails_and_its_error_comes_after_the_stages():
    calls = []
    reader = Reader()
    with pytest.raises(FleetError, match="editor: failed"):
        run_stages_then([reader, Editor(reader, fail=True)], lambda: calls.append(1), clip=make_clip(), telemetry={}, drive=None,
                        record={"clip_id": "c"})
    assert calls == []

    def boom():
        raise RuntimeError("then failed")

    reader = Reader(fail=True)
    with pytest.raises(FleetError, match="reader: failed"):  # the stage's error first
        run_stages_then([reader, Editor(reader)], boom, clip=make_clip(), telemetry={}, drive=None, record={"clip_id": "c"})
    reader = Reader()
    with pytest.raises(RuntimeError, match="then failed"):
        run_stages_then([reader, Editor(reader)], boom, clip=make_clip(), telemetry={}, drive=None, record={"clip_id": "c"})
