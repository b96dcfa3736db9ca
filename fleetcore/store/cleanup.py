"""Temporary files a run leaves behind, and running out of space.

Every writer publishes through a hidden temp name next to the final one (``fleetcore.store.fs``:
``.<name>.<process token><random>.tmp``; dataset builds: a ``.tmp-<version>-<random>`` folder) and
renames it when complete, so readers never see a partial file. A run killed at the wrong moment
leaves those behind. :func:`remove_orphans` (called when a curate run or a dataset build starts)
removes the ones older than ``older_than_s`` (default one hour: longer than any write takes, so a
live run's temp files are never touched); :func:`remove_own_tmp` removes this process's own after
a failure (a full disk). :func:`no_space` finds a full disk in an exception chain.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import time
from typing import Iterator

from fleetcore.store.fs import PROCESS_TMP_TOKEN, resolve

__all__ = ["ORPHAN_AGE_S", "no_space", "remove_orphans", "remove_own_tmp"]

log = logging.getLogger(__name__)

#: temp files and folders older than this are orphans of a run that is gone
ORPHAN_AGE_S = 3600.0
_TMP_FILE = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$|^\..+\.[0-9a-f]{12}\.tmp$")
_TMP_DIR = re.compile(r"^\.tmp-.+-[0-9a-f]{8}$")


def _walk(root: str) -> Iterator[tuple[str, str, bool, float]]:
    """(path, name, is_dir, mtime) of every temp file or folder under ``root`` (local or URI)."""
    fs, p = resolve(root)
    if fs is None:
        if not os.path.isdir(p):
            return
        for dirpath, dirs, files in os.walk(p):
            for d in list(dirs):
                if _TMP_DIR.match(d):
                    full = os.path.join(dirpath, d)
                    dirs.remove(d)
                    yield full, d, True, os.path.getmtime(full)
            for f in files:
                if _TMP_FILE.match(f):
                    full = os.path.join(dirpath, f)
                    try:
                        yield full, f, False, os.path.getmtime(full)
                    except FileNotFoundError:  # published meanwhile
                        continue
        return
    if not fs.exists(p):
        return
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    for f, info in fs.find(p, detail=True).items():
        name = f.rstrip("/").rsplit("/", 1)[-1]
        if _TMP_FILE.match(name):
            mt = info.get("LastModified") or info.get("mtime") or info.get("created")
            ts = mt.timestamp() if hasattr(mt, "timestamp") else float(mt or 0)
            yield f"{proto}://{f}", name, False, ts


def _rm(path: str, is_dir: bool) -> None:
    fs, p = resolve(path)
    try:
        if fs is None:
            shutil.rmtree(p) if is_dir else os.unlink(p)
        else:
            fs.rm(p, recursive=is_dir)
    except FileNotFoundError:
        pass


def remove_orphans(root: str, *, older_than_s: float = ORPHAN_AGE_S, now: float | None = None) -> list[str]:
    """Remove the temp files and folders under ``root`` older than ``older_than_s``; returns them."""
    cutoff = (time.time() if now is None else now) - older_than_s
    gone = []
    for path, _name, is_dir, mtime in list(_walk(root)):
        if mtime < cutoff:
            _rm(path, is_dir)
            gone.append(path)
    if gone:
        log.info("removed %d orphaned temporary file(s) under %s (older than %.0f s)", len(gone), root, older_than_s)
    return gone


def remove_own_tmp(root: str) -> list[str]:
    """Remove the temp files under ``root`` that this process wrote (after a failed run)."""
    gone = []
    for path, name, is_dir, _ in list(_walk(root)):
        if not is_dir and f".{PROCESS_TMP_TOKEN}" in name:
            _rm(path, is_dir)
            gone.append(path)
    return gone


def no_space(exc: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT error in ``exc``'s chain (or in its message, as Beam re-raises a worker's
    error in another exception), else None."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        e = e.__cause__ or e.__context__
    text = str(exc)
    if "No space left on device" in text or "Errno 28" in text or "Disk quota exceeded" in text:
        return OSError(errno.ENOSPC, "No space left on device")
    return None
