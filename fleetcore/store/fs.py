"""Storage for paths that may be local paths or fsspec URIs (``file://``, ``memory://``, ``s3://`` ...).

Local paths go through the operating system (``os.replace`` for atomic publication, fsync);
URIs go through fsspec (temp object, then ``mv``: object stores make an object visible only once
complete). Every writer in the pipeline uses these, so a job runs unchanged on a local disk or an
object store.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from typing import IO, Any, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem


# ----------------------------------------------------------------------------------------
def resolve(path: str | os.PathLike[str]) -> tuple[Any | None, str]:
    """(filesystem, path inside it); the filesystem is None for local paths (and ``file://``)."""
    p = os.fspath(path)
    if "://" not in p:
        return None, p
    fs, fp = fsspec.core.url_to_fs(p)
    if isinstance(fs, LocalFileSystem):
        return None, fp
    return fs, fp


def is_local(path: str | os.PathLike[str]) -> bool:
    return resolve(path)[0] is None


def join(base: str | os.PathLike[str], name: str) -> str:
    """``base/name`` for a local path or a URI (a URI stays a URI)."""
    b = os.fspath(base)
    if "://" in b:
        return b.rstrip("/") + "/" + name
    return os.path.join(b, name)


def basename(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    return posixpath.basename(p.rstrip("/")) if "://" in p else os.path.basename(p)


def open_file(path: str | os.PathLike[str], mode: str = "rb") -> IO[bytes]:
    fs, p = resolve(path)
    if fs is None:
        return open(p, mode)  # noqa: SIM115 - caller closes
    return fs.open(p, mode)  # type: ignore[no-any-return]


#: bytes fetched per request when a remote file is read through :func:`open_input_file` (a decoder
#: reading on fetches the next block; a seek outside it starts a new ranged GET)
RANGE_BLOCK = 1 << 21


def open_input_file(path: str | os.PathLike[str]) -> IO[bytes]:
    """A seekable read-only binary file: locally the file itself, on object stores a view that
    fetches :data:`RANGE_BLOCK`-sized byte ranges as it is read (never the whole object at once)."""
    fs, p = resolve(path)
    if fs is None:
        return open(p, "rb")  # noqa: SIM115 - caller closes
    return fs.open(p, "rb", block_size=RANGE_BLOCK, cache_type="readahead")  # type: ignore[no-any-return]


class SizedReader(io.RawIOBase):
    """Base of the read-only seekable file views here: ``_size`` bytes, position ``_pos``."""

    _size = 0
    _pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        self._pos = max(0, base + pos)
        return self._pos


class DigestReader(SizedReader):
    """A seekable read-only view of the file ``f`` (``size`` bytes) that computes the sha256 of the
    file's bytes while a reader takes them in order: one pass that demuxes every packet of a video
    also yields its digest. Reads out of order (a demuxer jumping to an index at the end) are not
    hashed until :meth:`hexdigest`, which reads whatever the hashed prefix has not reached yet."""

    def __init__(self, f: IO[bytes], size: int, *, name: str) -> None:
        super().__init__()
        import hashlib

        self._f = f
        self._size = int(size)
        self._pos = 0
        self._done = 0  # bytes [0, _done) are hashed
        self._h = hashlib.sha256()
        self.name = name  # demuxers take the name's extension as a hint

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if n is None or n < 0:
            n = self._size - self._pos
        if n <= 0 or self._pos >= self._size:
            return b""
        self._f.seek(self._pos)
        data = self._f.read(n)
        end = self._pos + len(data)
        if self._pos <= self._done < end:
            self._h.update(memoryview(data)[self._done - self._pos :])
            self._done = end
        self._pos = end
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        memoryview(b).cast("B")[: len(data)] = data
        return len(data)

    def hexdigest(self) -> str:
        """The file's sha256 (reading, in order, the bytes the hashed prefix has not reached)."""
        while self._done < self._size:
            self._f.seek(self._done)
            chunk = self._f.read(min(1 << 20, self._size - self._done))
            if not chunk:
                raise OSError(f"{self.name}: file ends at byte {self._done}, expected {self._size} bytes")
            self._h.update(chunk)
            self._done += len(chunk)
        return self._h.hexdigest()

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def file_size(path: str | os.PathLike[str]) -> int | None:
    """Size of a regular file, None when there is none."""
    fs, p = resolve(path)
    if fs is None:
        return os.stat(p).st_size if os.path.isfile(p) else None
    if not fs.isfile(p):
        return None
    return int(fs.size(p))


def makedirs(path: str | os.PathLike[str]) -> None:
    fs, p = resolve(path)
    if fs is None:
        os.makedirs(p, exist_ok=True)
    else:
        fs.makedirs(p, exist_ok=True)


def remove(path: str | os.PathLike[str]) -> None:
    fs, p = resolve(path)
    if fs is None:
        os.unlink(p)
    else:
        fs.rm(p)


def publish(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Move a completely written temp file to its final name (atomic ``os.replace`` locally;
    ``fs.mv`` elsewhere, whose object stores make the object visible only once complete)."""
    fs, t = resolve(tmp)
    if fs is None:
        os.replace(t, resolve(final)[1])
    else:
        fs.mv(t, resolve(final)[1])


#: this process's mark in its temp names (``.<name>.<PROCESS_TMP_TOKEN><random>.tmp``): a run that
#: fails removes the temp files it left (fleetcore.store.cleanup), never another process's
PROCESS_TMP_TOKEN = uuid.uuid4().hex[:8]


def unique_tmp(final: str | os.PathLike[str]) -> str:
    """A fresh hidden temp name next to ``final``: ``.<name>.<process token><random>.tmp``."""
    f = os.fspath(final)
    name = basename(f)
    return f[: len(f) - len(name)] + f".{name}.{PROCESS_TMP_TOKEN}{uuid.uuid4().hex[:8]}.tmp"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a unique temp file next to ``path``, then publish it (parent folders are made)."""
    fs, p = resolve(path)
    if fs is None:
        os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
    tmp = unique_tmp(path)
    try:
        with open_file(tmp, "wb") as f:
            f.write(data)
            if is_local(tmp):
                f.flush()
                os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        if file_size(tmp) is not None:
            remove(tmp)
        raise


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file (local path or URI), read in 1 MiB chunks: the one file
    hashing helper (bytes and text: ``fleetcore.store.layout.sha256_hex``)."""
    import hashlib

    h = hashlib.sha256()
    with open_file(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def read_if_file(path: str | os.PathLike[str]) -> bytes | None:
    """The bytes of a regular file, None when there is none: one open, no separate existence check
    (on an object store that check is a request of its own)."""
    try:
        return read_bytes(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def exists(path: str | os.PathLike[str]) -> bool:
    fs, p = resolve(path)
    return os.path.exists(p) if fs is None else bool(fs.exists(p))


def is_dir(path: str | os.PathLike[str]) -> bool:
    fs, p = resolve(path)
    return os.path.isdir(p) if fs is None else bool(fs.isdir(p))


def list_dir(path: str | os.PathLike[str]) -> list[str]:
    """Names (not paths) of the entries of a folder, sorted."""
    fs, p = resolve(path)
    if fs is None:
        return sorted(os.listdir(p))
    return sorted(posixpath.basename(e.rstrip("/")) for e in fs.ls(p, detail=False))


def glob(pattern: str) -> list[str]:
    """Paths matching a glob pattern, sorted; URIs keep their scheme."""
    fs, p = resolve(pattern)
    if fs is None:
        import glob as _glob

        return sorted(_glob.glob(p))
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return sorted(f"{proto}://{m}" for m in fs.glob(p))


def iter_files(path: str) -> Iterator[str]:
    fs, p = resolve(path)
    if fs is None:
        for root, _dirs, files in os.walk(p):
            for name in sorted(files):
                yield os.path.join(root, name)
    else:
        proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        for f in fs.find(p):
            yield f"{proto}://{f}"


class AlreadyExists(FileExistsError):
    """:func:`create_exclusive` found the file already there (another writer won)."""


def create_exclusive(path: str | os.PathLike[str], data: bytes) -> None:
    """Create ``path`` with ``data`` only if no file of that name exists, atomically: the file is
    complete when it appears, and of two writers exactly one succeeds (the other gets
    :class:`AlreadyExists`). Locally a hard link of a complete temp file; on object stores a
    conditional put (``If-None-Match: *`` on S3, which s3fs sends for ``mode="create"``)."""
    fs, p = resolve(path)
    if fs is None:
        os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
        tmp = unique_tmp(p)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)
        except FileExistsError as exc:
            raise AlreadyExists(p) from exc
        finally:
            os.unlink(tmp)
        return
    try:
        fs.pipe_file(p, data, mode="create")
    except FileExistsError as exc:
        raise AlreadyExists(p) from exc
    except OSError as exc:  # an S3 412 Precondition Failed surfaces as a generic OSError in some versions
        if "PreconditionFailed" in str(exc) or "412" in str(exc):
            raise AlreadyExists(p) from exc
        raise


def read_range(path: str | os.PathLike[str], offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset``: one ranged GET on object stores (no read-ahead, no whole-file
    download), a seek and read locally."""
    fs, p = resolve(path)
    if fs is None:
        with open(p, "rb") as f:
            f.seek(offset)
            return f.read(size)
    return bytes(fs.cat_file(p, start=offset, end=offset + size))


def read_parquet(path: str | os.PathLike[str], *, columns: list[str] | None = None) -> Any:
    """One Parquet file as a pyarrow Table (local path or URI; on object stores only the footer and
    the columns asked for are fetched, by range)."""
    import pyarrow.parquet as pq

    fs, p = resolve(path)
    return pq.read_table(p, columns=columns, filesystem=fs)


def write_parquet(table: Any, path: str | os.PathLike[str]) -> int:
    """Write a pyarrow Table as zstd Parquet atomically (temp, then rename) to a local path or URI;
    returns its size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue().to_pybytes()
    atomic_write_bytes(path, data)
    return len(data)
