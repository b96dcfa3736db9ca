"""The ffmpeg front (fleetcore.video.ffmpeg): command lines, errors, timeouts, byte-identical previews.

The pinned command lines and digests were recorded on the code before its ffmpeg calls moved to
ffmpeg-python (hand-built argument lists run with ``subprocess``).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import ffmpeg
import imageio_ffmpeg
import numpy as np
import pytest

import fleetcore.query.preview
from fleetcore.query.preview import encode_mp4
from fleetcore.simulate.encode import H264Writer, h264_stream
from fleetcore.video.ffmpeg import GLOBAL_ARGS, FfmpegError, command, run

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PINNED_FFMPEG = "n9.0.2-17-g2a571b6068-20260930"  # the imageio-ffmpeg binary the digests were recorded with

OLD_SIMULATOR = (
    "-hide_banner -nostdin -loglevel error -y -f rawvideo -pix_fmt bgr24 -s 122x90 -framerate 2997/100 -i pipe:0 "
    "-an -c:v libx264 -preset veryfast -crf 26 -pix_fmt yuv420p -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 -threads 1 "
    "-fflags +bitexact -flags:v +bitexact -map_metadata -1 -movflags +faststart -f mp4 OUT"
)
OLD_PREVIEW = (
    "-v error -y -f rawvideo -pix_fmt rgb24 -s 122x90 -r 29.97 -i - -c:v libx264 -pix_fmt yuv420p -preset veryfast "
    "-crf 28 -threads 1 -movflags +faststart -map_metadata -1 -fflags +bitexact -flags:v +bitexact OUT"
)
PINNED_PREVIEWS = {  # encode_mp4 of _preview_frames() at these rates
    10.0: "d7ffc7b3462614fad4a1a31bf2a7e583fa499b5327e7c490a9fa63a8598fd1b5",
    29.97: "d1f5eb372affb69a6b7136254471914a4662c887a57136249f7787e26e28eb0e",
    7.5: "048395e0614ffbf06e5361b3747d9784d4e51ffac46c5b56c84cb452a48da01d",
}
GLOBAL = {"-hide_banner": 0, "-nostdin": 0, "-y": 0, "-loglevel": 1, "-v": 1}
FLAGS = {"-an"}  # per-file options without a value in these command lines


def sections(args: list[str]) -> dict[str, object]:
    """Global options (in order), then each input's and the output's options as sorted (option, value) pairs."""
    i, glob = 0, []
    while args[i] in GLOBAL:
        n = GLOBAL[args[i]]
        glob.append(tuple(args[i : i + 1 + n]))
        i += 1 + n
    inputs, cur = [], []
    while i < len(args) - 1:
        if args[i] == "-i":
            inputs.append((sorted(cur), args[i + 1]))
            cur, i = [], i + 2
        elif args[i] in FLAGS:
            cur.append((args[i],))
            i += 1
        else:
            cur.append((args[i], args[i + 1]))
            i += 2
    return {"global": glob, "inputs": inputs, "output": (sorted(cur), args[-1])}


def _same_up_to_order(new: list[str], old: str) -> None:
    log.info("before: %s", old)
    log.info("after:  %s", " ".join(new))
    assert sections(new) == sections(old.split()), f"\nbefore: {old}\nafter:  {' '.join(new)}"


def test_simulator_command_line_is_the_old_one_up_to_option_order() -> None:
    new = command(h264_stream("OUT", width=122, height=90, fps=29.97))
    assert new[0] == imageio_ffmpeg.get_ffmpeg_exe()
    assert new[1 : 1 + len(GLOBAL_ARGS)] == list(GLOBAL_ARGS) == OLD_SIMULATOR.split()[: len(GLOBAL_ARGS)]
    _same_up_to_order(new[1:], OLD_SIMULATOR)


def test_preview_command_line_is_the_old_one_with_the_shared_global_options(tmp_path: Path, monkeypatch) -> None:
    seen = []

    def spy(stream, **kw):
        seen.append(command(stream))
        run(stream, **kw)

    monkeypatch.setattr(fleetcore.query.preview, "run_ffmpeg", spy)
    encode_mp4([np.zeros((91, 123, 3), np.uint8)] * 2, tmp_path / "p.mp4", fps=29.97)
    (new,) = seen
    assert new[1 : 1 + len(GLOBAL_ARGS)] == list(GLOBAL_ARGS)
    old = OLD_PREVIEW.split()
    new_files = new[1 + len(GLOBAL_ARGS) : -1] + ["OUT"]
    assert new[-1] == str(tmp_path / ".p.mp4.tmp.mp4")
    _same_up_to_order(new_files, " ".join(old[3:]))


def _preview_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 255, (91, 123, 3), dtype=np.uint8) for _ in range(12)]


def test_previews_are_byte_identical_to_before(tmp_path: Path) -> None:
    if imageio_ffmpeg.get_ffmpeg_version() != PINNED_FFMPEG:
        pytest.skip(f"digests pinned for ffmpeg {PINNED_FFMPEG}, this is {imageio_ffmpeg.get_ffmpeg_version()}")
    frames = _preview_frames()
    found = {fps: hashlib.sha256(encode_mp4(frames, tmp_path / f"{fps}.mp4", fps=fps).read_bytes()).hexdigest() for fps in PINNED_PREVIEWS}
    assert found == PINNED_PREVIEWS
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{fps}.mp4" for fps in PINNED_PREVIEWS)


def test_failure_carries_stderr_and_command(tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    with pytest.raises(FfmpegError) as ei:
        run(ffmpeg.input("testsrc2=size=64x48", f="lavfi").output(str(out), **{"c:v": "no_such_encoder", "frames:v": "1"}), path=out)
    e = ei.value
    assert e.path == str(out) and e.cmd[0] == imageio_ffmpeg.get_ffmpeg_exe() and "-nostdin" in e.cmd
    assert "no_such_encoder" in e.stderr
    msg = str(e)
    assert "\n" not in msg and msg.startswith(f"{out}: ffmpeg exited with status ") and "no_such_encoder" in msg


def test_timeout_kills_ffmpeg(tmp_path: Path) -> None:
    out = tmp_path / "slow.mp4"
    slow = ffmpeg.input("testsrc2=size=64x48:rate=10", f="lavfi", re=None).output(str(out), t="60")  # -re: real time
    with pytest.raises(FfmpegError, match=r"ran past its 0.5 s timeout"):
        run(slow, path=out, timeout_s=0.5)


def test_pipe_reports_early_exit_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "cam" / "000.mp4"
    frame = np.zeros((90, 122, 3), np.uint8)
    with pytest.raises(FfmpegError) as ei:
        with H264Writer(out, width=122, height=90, fps=10.0, preset="no_such_preset") as w:
            for _ in range(2000):
                w.write(frame)
    assert ei.value.path == str(out) and "preset" in ei.value.stderr.lower()
    assert list(out.parent.iterdir()) == []


def test_an_error_while_writing_aborts_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "cam" / "000.mp4"
    with pytest.raises(KeyError, match="renderer failed"):
        with H264Writer(out, width=122, height=90, fps=10.0) as w:
            w.write(np.zeros((90, 122, 3), np.uint8))
            raise KeyError("renderer failed")
    assert list(out.parent.iterdir()) == []


def test_no_ffmpeg_command_line_outside_the_front() -> None:
    front = REPO / "fleetcore" / "video" / "ffmpeg.py"
    bad = [str(p.relative_to(REPO)) for p in sorted((REPO / "fleetcore").rglob("*.py"))
           if p != front and "subprocess" in (text := p.read_text()) and "ffmpeg" in text.lower()]
    assert not bad, f"these modules run subprocesses and mention ffmpeg; run ffmpeg through fleetcore.video.ffmpeg: {bad}"
