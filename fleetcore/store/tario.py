"""Safe, deterministic tar reading and writing for WebDataset shards.

Writing (:func:`write_tar`, :func:`tar_bytes`): POSIX tar (ustar headers, a PAX
extended header only when a name needs one) with every varying header field fixed
(``mtime=0``, ``uid=gid=0``, empty ``uname``/``gname``, ``mode=0o644``), members in
the order given. The same members always give the same bytes.

Reading (:func:`scan_tar`, :func:`iter_members`, :func:`index_tar`): every member is
checked before it is yielded. A member whose name could escape an extraction folder
(absolute, drive letter, ``..`` component, backslash, NUL) or that is not a regular
file (link, device, FIFO, sparse file, directory with data) raises
:class:`UnsafeTarMember`; an archive that is truncated or has a damaged header raises
:class:`ShardError`. (Python's ``tarfile`` silently stops at a damaged or missing
header; these readers do not.)

:func:`read_member` reads one member's bytes by offset, without scanning the archive.

Paths may be local paths or fsspec URIs (``file://``, ``memory://``, ``s3://`` ...); the
small storage helpers at the end of this module (:func:`open_file`, :func:`publish`, ...)
use the operating system directly for local paths and fsspec otherwise.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from dataclasses import dataclass
from typing import IO, BinaryIO, Iterable, Iterator, NamedTuple

from fleetcore.errors import FleetError
from fleetcore.store.fs import basename, open_file, read_range

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240
EOF_MARKER = b"\0" * (2 * BLOCK)

_DRIVE_RE = re.compile(r"^[A-Za-z]:")
# WebDataset's split (webdataset.tariterators.base_plus_ext): key = everything up to the
# first dot of the basename, extension = the rest.
_WDS_SPLIT_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")

PathOrFile = str | os.PathLike[str] | BinaryIO | IO[bytes]


class ShardError(FleetError):
    """A tar shard (or fragment) is unreadable: names the shard, the member (if any) and the problem."""

    def __init__(self, shard: str, problem: str, *, member: str | None = None, code: str = "tar_invalid") -> None:
        self.shard = str(shard)
        self.member = member
        super().__init__(f"{self.shard}: member {member!r}" if member is not None else self.shard, problem, code=code)


class UnsafeTarMember(ShardError):
    """A tar member that must not be read or extracted (path escape, link, device, ...)."""

    def __init__(self, shard: str, reason: str, *, member: str) -> None:
        self.reason = reason
        super().__init__(shard, reason, member=member, code="unsafe_member")


class TarMember(NamedTuple):
    """One regular-file member: name, where its data starts, its size and its bytes."""

    name: str
    offset_data: int
    size: int
    data: bytes


@dataclass(frozen=True)
class MemberEntry:
    """Where a member lies in the archive: its first header block (including any PAX /
    GNU long-name header) and its data."""

    name: str
    header_offset: int
    data_offset: int
    size: int

    @property
    def end_offset(self) -> int:
        """First byte after the member's data padding (the next header)."""
        return self.data_offset + _pad(self.size)


@dataclass(frozen=True)
class TarScan:
    """Result of :func:`scan_tar`."""

    members: tuple[MemberEntry, ...]
    records_end: int  # offset of the end-of-archive marker (= bytes of member records)
    file_size: int


# ----------------------------------------------------------------------------------------
# names
# ----------------------------------------------------------------------------------------
def unsafe_name_reason(name: str) -> str | None:
    """Why a member name is unsafe, or None when it is a plain relative path."""
    if not name:
        return "empty member name"
    if "\0" in name:
        return "member name contains a NUL character"
    if "\\" in name:
        return "member name contains a backslash (expected '/'-separated relative path)"
    if name.startswith("/"):
        return "absolute member name (expected a relative path)"
    if _DRIVE_RE.match(name):
        return "member name starts with a drive letter (expected a relative path)"
    if ".." in name.split("/"):
        return "member name has a '..' component (would escape the extraction folder)"
    return None


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, extension) as WebDataset groups members; None when the name has no extension.

    The key is everything up to the first dot of the basename: ``clip-1.front.000.jpg``
    is key ``clip-1``, extension ``front.000.jpg``.
    """
    m = _WDS_SPLIT_RE.match(name)
    if not m:
        return None
    return m.group(1), m.group(2)


# ----------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------
def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.mode = 0o644
    ti.uid = 0
    ti.gid = 0
    ti.uname = ""
    ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def write_tar(dest: PathOrFile, members: Iterable[tuple[str, bytes]]) -> None:
    """Write ``members`` (name, bytes) to a tar, deterministically, in the order given.

    ``dest`` is a path (written in place; callers wanting atomicity write to a temp path)
    or a writable binary file object. Raises UnsafeTarMember for an unsafe or repeated name.
    """
    own = isinstance(dest, (str, os.PathLike))
    fobj: IO[bytes] = open_file(dest, "wb") if own else dest  # type: ignore[arg-type,assignment]
    label = str(dest) if own else getattr(dest, "name", "<stream>")
    try:
        seen: set[str] = set()
        with tarfile.open(fileobj=fobj, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
            for name, data in members:
                reason = unsafe_name_reason(name)
                if reason is not None:
                    raise UnsafeTarMember(str(label), reason, member=name)
                if name in seen:
                    raise UnsafeTarMember(str(label), "member name repeats", member=name)
                seen.add(name)
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    raise TypeError(f"{label}: member {name!r}: expected bytes, found {type(data).__name__}")
                buf = bytes(data)
                tar.addfile(_tarinfo(name, len(buf)), io.BytesIO(buf))
    finally:
        if own:
            fobj.close()


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """The bytes :func:`write_tar` would write."""
    buf = io.BytesIO()
    write_tar(buf, members)
    return buf.getvalue()


def trailer_size(records_bytes: int) -> int:
    """Bytes added after ``records_bytes`` of member records to close an archive the way
    ``tarfile`` does: two zero blocks, then zero padding to a whole 10240-byte record."""
    total = records_bytes + len(EOF_MARKER)
    rem = total % RECORD
    if rem:
        total += RECORD - rem
    return total - records_bytes


# ----------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------
def _pad(n: int) -> int:
    return (n + BLOCK - 1) // BLOCK * BLOCK


def _label(src: PathOrFile) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return str(getattr(src, "name", "<stream>"))


def _file_size(f: IO[bytes]) -> int:
    pos = f.tell()
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(pos)
    return size


def _check_member(label: str, ti: tarfile.TarInfo) -> bool:
    """Raise for an unsafe member; True for a regular file, False for an empty directory (skipped)."""
    reason = unsafe_name_reason(ti.name)
    if reason is not None:
        raise UnsafeTarMember(label, reason, member=ti.name)
    if ti.issym():
        raise UnsafeTarMember(label, f"symbolic link (to {ti.linkname!r}); only regular files are allowed", member=ti.name)
    if ti.islnk():
        raise UnsafeTarMember(label, f"hard link (to {ti.linkname!r}); only regular files are allowed", member=ti.name)
    if ti.ischr() or ti.isblk():
        raise UnsafeTarMember(label, "device file; only regular files are allowed", member=ti.name)
    if ti.isfifo():
        raise UnsafeTarMember(label, "FIFO; only regular files are allowed", member=ti.name)
    if ti.issparse():
        raise UnsafeTarMember(label, "GNU sparse file; only regular files are allowed", member=ti.name)
    if ti.isdir():
        if ti.size:
            raise UnsafeTarMember(label, f"directory entry carrying {ti.size} bytes of data", member=ti.name)
        return False
    if not ti.isreg():
        raise UnsafeTarMember(label, f"unsupported member type {ti.type!r}; only regular files are allowed", member=ti.name)
    return True


class _Scanner:
    """Walks an archive's headers; after a full iteration ``records_end`` and ``file_size`` are set."""

    def __init__(self, label: str, f: IO[bytes]) -> None:
        self.label = label
        self.f = f
        self.records_end = -1
        self.file_size = -1

    def __iter__(self) -> Iterator[MemberEntry]:
        label, f = self.label, self.f
        size = _file_size(f)
        f.seek(0)
        try:
            tar = tarfile.open(fileobj=f, mode="r:", encoding="utf-8")
        except tarfile.ReadError as exc:
            raise ShardError(label, f"not a tar archive ({exc})", code="tar_invalid") from exc
        last: str | None = None
        try:
            while True:
                try:
                    ti = tar.next()
                except tarfile.ReadError as exc:
                    raise ShardError(label, f"damaged or truncated after member {last!r} ({exc})", code="tar_truncated") from exc
                if ti is None:
                    break
                if ti.offset_data + ti.size > size:
                    raise ShardError(
                        label,
                        f"truncated: data ends at byte {ti.offset_data + ti.size}, file has {size} bytes",
                        member=ti.name,
                        code="tar_truncated",
                    )
                if _check_member(label, ti):
                    pos = f.tell()
                    yield MemberEntry(ti.name, ti.offset, ti.offset_data, ti.size)
                    f.seek(pos)
                last = ti.name
                tar.members = []  # do not accumulate TarInfo objects
            end = tar.offset
        finally:
            tar.close()
        f.seek(end)
        tail = f.read(len(EOF_MARKER))
        if tail != EOF_MARKER:
            if len(tail) < len(EOF_MARKER):
                raise ShardError(
                    label,
                    f"truncated: the file ends at byte {size}, inside the header or end-of-archive marker "
                    f"that starts at byte {end} after member {last!r}",
                    code="tar_truncated",
                )
            raise ShardError(
                label,
                f"damaged header at byte {end} after member {last!r} "
                "(expected a valid tar header or the end-of-archive marker of two zero blocks)",
                code="tar_invalid",
            )
        self.records_end = end
        self.file_size = size


def scan_tar(src: PathOrFile) -> TarScan:
    """Headers of every member (safe regular files only), without reading any data.

    Raises UnsafeTarMember / ShardError as described in the module docstring.
    """
    label = _label(src)
    own = isinstance(src, (str, os.PathLike))
    f: IO[bytes] = open_file(src, "rb") if own else src  # type: ignore[arg-type,assignment]
    try:
        sc = _Scanner(label, f)
        entries = tuple(sc)
    finally:
        if own:
            f.close()
    return TarScan(entries, sc.records_end, sc.file_size)


def iter_members(src: PathOrFile) -> Iterator[TarMember]:
    """Yield (name, offset_data, size, bytes) of every regular-file member, in archive order.

    Every member is checked before it is yielded; the end-of-archive check runs after the
    last member (so a truncated archive raises after yielding its intact members).
    """
    label = _label(src)
    own = isinstance(src, (str, os.PathLike))
    f: IO[bytes] = open_file(src, "rb") if own else src  # type: ignore[arg-type,assignment]
    try:
        for entry in _Scanner(label, f):
            f.seek(entry.data_offset)
            data = f.read(entry.size)
            if len(data) != entry.size:
                raise ShardError(label, f"short read: expected {entry.size} bytes, got {len(data)}", member=entry.name, code="tar_truncated")
            yield TarMember(entry.name, entry.data_offset, entry.size, data)
    finally:
        if own:
            f.close()


def read_member(path: str | os.PathLike[str], data_offset: int, size: int) -> bytes:
    """Read ``size`` bytes at ``data_offset`` (from a shard index row): random access, no scan."""
    if data_offset < 0 or size < 0:
        raise ShardError(str(path), f"invalid range offset={data_offset} size={size} (expected non-negative)", code="bad_range")
    data = read_range(path, data_offset, size)
    if len(data) != size:
        raise ShardError(
            str(path), f"expected {size} bytes at offset {data_offset}, file ends after {len(data)}", code="tar_truncated"
        )
    return data


def index_tar(path: str | os.PathLike[str], *, shard: str | None = None, base_offset: int = 0) -> list[dict[str, object]]:
    """Rows in the ``schemas.SHARD_INDEX`` contract, one per member, in archive order.

    ``shard`` defaults to the file's basename. A member without an extension (so without a
    WebDataset key) raises UnsafeTarMember.
    """
    label = shard if shard is not None else basename(path)
    scan = scan_tar(path)
    return index_rows(label, scan.members, base_offset=base_offset, source=str(path))


def index_rows(shard: str, members: Iterable[MemberEntry], *, base_offset: int = 0, source: str | None = None) -> list[dict[str, object]]:
    """SHARD_INDEX rows for ``members`` whose offsets are relative to ``base_offset``."""
    rows: list[dict[str, object]] = []
    for m in members:
        split = split_member_name(m.name)
        if split is None:
            raise UnsafeTarMember(source or shard, "member name has no extension, so no WebDataset key", member=m.name)
        rows.append(
            {
                "shard": shard,
                "key": split[0],
                "member": m.name,
                "header_offset": base_offset + m.header_offset,
                "data_offset": base_offset + m.data_offset,
                "size": m.size,
            }
        )
    return rows
