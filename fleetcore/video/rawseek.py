"""Byte-offset seeking in raw Annex-B H.264/HEVC elementary streams.

FFmpeg's raw ``h264``/``hevc`` demuxers cannot seek by time. Given the byte offset of a
keyframe (``packet.pos`` from the frame index) we instead open a virtual file made of the
stream's parameter sets (SPS/PPS, plus VPS for HEVC, taken from the start of the file)
followed by the file's bytes from that keyframe on. The decoder then starts cleanly at the
keyframe and its output frame ``k`` is frame ``keyframe_number + k`` of the file -- valid
for closed GOPs (no leading pictures before a keyframe in output order, B-frames or not), which is
the assumption made for raw streams throughout (dashcam / comma.ai HEVC; x264's default; x265 with
``open-gop=0``). Validation checks it: a raw file whose last keyframe does not decode this way is
decoded from its start instead (frame index ``seek == "decode"``).
"""

from __future__ import annotations

import os
from typing import Literal

from fleetcore.store.fs import SizedReader, file_size, open_input_file

_H264_PARAM_NALS = {7, 8}  # SPS, PPS
_HEVC_PARAM_NALS = {32, 33, 34}  # VPS, SPS, PPS

Codec = Literal["h264", "hevc"]


def nal_units(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each NAL payload (after its start code) in an Annex-B byte string."""
    starts: list[int] = []
    i = 0
    n = len(data)
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    out = []
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else n
        # a 4-byte start code leaves a zero byte at the end of the previous NAL
        while e > s and data[e - 1] == 0 and k + 1 < len(starts):
            e -= 1
        out.append((s, e))
    return out


def nal_type(first_byte: int, codec: Codec) -> int:
    """The NAL unit type in the first byte of a NAL payload."""
    return first_byte & 0x1F if codec == "h264" else (first_byte >> 1) & 0x3F


def parameter_set_types(codec: Codec) -> set[int]:
    """NAL types of the parameter sets: SPS, PPS (and VPS for HEVC)."""
    return _H264_PARAM_NALS if codec == "h264" else _HEVC_PARAM_NALS


def starts_decoding(types: list[int], codec: Codec) -> bool:
    """True when an access unit with these NAL types is one a decoder can start at: an IDR picture
    for H.264, an IRAP picture (types 16..21) for HEVC."""
    return any(16 <= t <= 21 for t in types) if codec == "hevc" else 5 in types


def parameter_sets(data: bytes, codec: Codec) -> bytes:
    """The parameter-set NAL units found in ``data``, each with a 4-byte start code."""
    wanted = parameter_set_types(codec)
    out = bytearray()
    for s, e in nal_units(data):
        if s >= e:
            continue
        if nal_type(data[s], codec) in wanted:
            out += b"\x00\x00\x00\x01" + data[s:e]
    return bytes(out)


def leading_pictures(data: bytes, codec: Codec, *, keyframe: bool) -> bool:
    """True when one access unit shows that the stream has open GOPs, i.e. frames that a decoder
    starting at a keyframe drops: an HEVC RASL picture (NAL types 8, 9), or an H.264 keyframe that
    is no IDR picture (a recovery-point I frame, NAL type 1 instead of 5)."""
    for s, e in nal_units(data):
        if s >= e:
            continue
        if codec == "hevc":
            if (data[s] >> 1) & 0x3F in (8, 9):
                return True
        elif keyframe:
            t = data[s] & 0x1F
            if t == 5:
                return False
            if t == 1:
                return True
    return False


class SplicedFile(SizedReader):
    """Read-only file object: ``prefix`` bytes followed by ``path`` from byte ``offset`` on."""

    def __init__(self, path: str | os.PathLike[str], offset: int, prefix: bytes) -> None:
        super().__init__()
        self._f = open_input_file(path)  # closed in close(); a URI is read by byte ranges
        self._prefix = prefix
        self._offset = int(offset)
        self._size = len(prefix) + max(0, (file_size(path) or 0) - self._offset)
        self._pos = 0

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        mv = memoryview(b).cast("B")
        want = len(mv)
        got = 0
        p = len(self._prefix)
        if self._pos < p and want:
            chunk = self._prefix[self._pos : self._pos + want]
            mv[: len(chunk)] = chunk
            got = len(chunk)
            self._pos += got
        if got < want and self._pos >= p:
            self._f.seek(self._offset + self._pos - p)
            n = self._f.readinto(mv[got:])
            n = n or 0
            got += n
            self._pos += n
        return got

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()
