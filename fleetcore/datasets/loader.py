"""A training-data loader for built datasets (WebDataset tar or Arrow IPC shards).

``DatasetLoader(path, rank=, world_size=, worker=, num_workers=, ...)`` is one reader: one
(rank, worker) slot of a distributed job. It iterates its share of one epoch; iterating again
continues with the next epoch.

**Partitioning.** The manifest lists the samples shard by shard. Each epoch the shards are
permuted with ``(seed, epoch)`` (samples of a shard stay together, so reads stay local) and the
resulting sample sequence of length N is cut into ``P = world_size * num_workers`` equal,
contiguous blocks, block ``rank * num_workers + worker`` for this reader. With
``policy="truncate"`` (default) each block has ``N // P`` samples and the last ``N % P`` of the
epoch's sequence are skipped this epoch (a different few each epoch); with ``policy="pad"`` each has
``ceil(N / P)`` and the sequence is padded by repeating its first samples. Either way **every rank
and every worker gets the same number of samples**, so no rank waits for another at the end of an
epoch (no hang on an uneven last shard).

**Shuffling.** Within its block a reader shuffles with a buffer of ``shuffle_buffer`` samples,
seeded by ``(seed, epoch, rank, worker)``. The order is computed on sample indices, so it is
exactly reproducible, and the loader then reads each sample by offset.

**Resuming.** ``state_dict()`` records the epoch and how many samples this reader has handed
out; ``load_state_dict()`` on a fresh loader with the same partition continues with the next
sample: no sample of the epoch is repeated or skipped.

**Reading.** Tar shards are read in place: the shard's headers are checked once with
:func:`fleetcore.store.tario.scan_tar` (an escaping name such as ``../x`` or ``/x``, a link or a device
raises :class:`~fleetcore.store.tario.UnsafeTarMember`), then each sample is one ``pread`` of its
contiguous member bytes; JPEG frames are decoded by simplejpeg straight into a preallocated
``(cameras, frames, H, W, 3)`` array. Arrow shards are memory-mapped (``pa.memory_map`` +
``pa.ipc.open_file``) and frames are zero-copy numpy views into the mapped file.

**Checking.** With ``verify=True`` (default) every sample read is checked against the dataset's
``index.arrow`` (itself checked against the sha256 the manifest records): each tar member's bytes
against its recorded sha256, an Arrow sample's frames + telemetry against theirs. A sample whose
bytes differ, or that does not read or decode (truncated shard, JPEG that does not decode), raises
:class:`CorruptSample` (``on_corrupt="raise"``, default) or is skipped with a logged warning and
recorded in ``loader.skipped`` (``on_corrupt="skip"``; the reader then hands out fewer samples).
Each sample is checked the first time a process reads it from a shard file (identified by path,
size and modification time); later epochs in the same process read it unchecked, at full speed.

A sample is a dict: ``__key__``, ``clip_id``, ``split``, ``trigger``, ``frames`` (uint8
``(C, F, H, W, 3)``), ``valid`` (bool ``(C, F)``: False where the source had no frame; zeros),
``telemetry`` (float32 ``(F, T)``, NaN = unknown, columns in the manifest's
``telemetry_columns``), ``times_ns`` (int64 ``(F,)``) and ``record`` (the sample JSON: lineage,
labels, privacy). With ``decode=False`` a tar sample is ``{"__key__", "members": {ext: bytes}}``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np

from fleetcore.datasets.build import INDEX_NAME, DatasetError
from fleetcore.datasets.manifest import read_manifest
from fleetcore.errors import FleetError
from fleetcore.store.fs import sha256_file
from fleetcore.store.tario import ShardError, scan_tar

log = logging.getLogger(__name__)

#: (shard path, size, mtime_ns) -> keys of its samples this process has checked (see "Checking")
_CHECKED: dict[tuple[str, int, int], set[str]] = {}

Policy = Literal["truncate", "pad"]
Split = Literal["train", "val"]
OnCorrupt = Literal["raise", "skip"]


class CorruptSample(DatasetError):
    """A sample read from a dataset shard does not match the dataset's index (or does not read or
    decode): names the shard, the sample key and the member."""

    def __init__(self, path: str, problem: str, *, key: str, member: str | None = None, code: str = "sample_corrupt") -> None:
        self.key, self.member = key, member
        super().__init__(f"{path}: sample {key!r}" + (f" member {member!r}" if member else ""), problem, code=code)


@dataclass(frozen=True)
class _TarSample:
    start: int
    end: int
    members: tuple[tuple[str, int, int], ...]  # (extension, offset from start, size)


class _TarShard:
    """One tar shard: headers checked once (safe reader), samples read by offset."""

    def __init__(self, path: Path):
        self.path = path
        scan = scan_tar(path)  # raises UnsafeTarMember for escapes / links / devices
        groups: dict[str, list[tuple[str, int, int, int]]] = {}
        for m in scan.members:
            key, _, ext = m.name.partition(".")
            if not ext or "/" in m.name:
                raise ShardError(str(path), "expected <key>.<ext> member names", member=m.name, code="unsafe_member")
            groups.setdefault(key, []).append((ext, m.header_offset, m.data_offset, m.size))
        self.samples: dict[str, _TarSample] = {}
        for key, ms in groups.items():
            start = ms[0][1]
            end = max(d + s for _, _, d, s in ms)
            self.samples[key] = _TarSample(start, end, tuple((ext, d - start, s) for ext, _, d, s in ms))
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, key: str) -> tuple[memoryview, _TarSample]:
        s = self.samples.get(key)
        if s is None:
            raise ShardError(str(self.path), f"sample {key!r} is not in the shard", code="sample_missing")
        data = os.pread(self.fd, s.end - s.start, s.start)
        if len(data) != s.end - s.start:
            raise ShardError(str(self.path), f"short read of sample {key!r} (truncated shard)", code="tar_truncated")
        return memoryview(data), s

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _ArrowShard:
    """One Arrow IPC shard, memory-mapped; batches' columns as zero-copy numpy views."""

    def __init__(self, path: Path):
        import pyarrow as pa

        self.path = path
        self.mmap = pa.memory_map(str(path), "r")
        self.reader = pa.ipc.open_file(self.mmap)
        self.starts: list[int] = []
        n = 0
        self._batches: dict[int, dict[str, Any]] = {}
        for b in range(self.reader.num_record_batches):
            self.starts.append(n)
            n += self.reader.get_batch(b).num_rows
        self.num_rows = n

    def batch(self, b: int) -> dict[str, Any]:
        got = self._batches.get(b)
        if got is None:
            rb = self.reader.get_batch(b)
            got = {
                "key": rb.column("key").to_pylist(),
                "clip_id": rb.column("clip_id").to_pylist(),
                "split": rb.column("split").to_pylist(),
                "trigger": rb.column("trigger").to_pylist(),
                "record": rb.column("record").to_pylist(),
                "frames": rb.column("frames").to_numpy_ndarray(),  # zero-copy view into the map
                "valid": rb.column("valid").to_numpy_ndarray(),
                "telemetry": rb.column("telemetry").to_numpy_ndarray(),
                "times_ns": rb.column("times_ns").to_numpy_ndarray(),
            }
            self._batches = {b: got}  # keep one batch of views alive
        return got

    def locate(self, pos: int) -> tuple[int, int]:
        import bisect

        b = bisect.bisect_right(self.starts, pos) - 1
        return b, pos - self.starts[b]

    def close(self) -> None:
        self._batches = {}
        self.mmap.close()


def _npy(data: memoryview | bytes) -> np.ndarray:
    buf = io.BytesIO(data)
    version = np.lib.format.read_magic(buf)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    count = int(np.prod(shape)) if shape else 1
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=buf.tell())
    return arr.reshape(shape, order="F" if fortran else "C")


class DatasetLoader:
    """Iterate one (rank, worker) share of a built dataset; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        split: Split | None = None,
        rank: int = 0,
        world_size: int = 1,
        worker: int = 0,
        num_workers: int = 1,
        shuffle_buffer: int = 64,
        shuffle_shards: bool = True,
        seed: int = 0,
        epoch: int = 0,
        decode: bool = True,
        policy: Policy = "truncate",
        max_open_shards: int = 16,
        verify: bool = True,
        on_corrupt: OnCorrupt = "raise",
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, found rank={rank} world_size={world_size}")
        if num_workers < 1 or not 0 <= worker < num_workers:
            raise ValueError(f"worker must be in 0..num_workers-1, found worker={worker} num_workers={num_workers}")
        if policy not in ("truncate", "pad"):
            raise ValueError(f"policy must be 'truncate' or 'pad', found {policy!r}")
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, found {shuffle_buffer}")
        if max_open_shards < 1:
            raise ValueError(f"max_open_shards must be >= 1, found {max_open_shards}")
        if on_corrupt not in ("raise", "skip"):
            raise ValueError(f"on_corrupt must be 'raise' or 'skip', found {on_corrupt!r}")
        self.verify, self.on_corrupt = bool(verify), on_corrupt
        #: (key, reason) of every sample skipped as corrupt (``on_corrupt="skip"``)
        self.skipped: list[tuple[str, str]] = []
        self._digests: dict[str, dict[str, Any]] | None = None
        self._idents: dict[int, tuple[str, int, int]] = {}  # shard index -> (path, size, mtime_ns) when opened
        self.max_open_shards = max_open_shards
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.format: str = self.manifest["format"]
        self.split, self.rank, self.world_size = split, rank, world_size
        self.worker, self.num_workers = worker, num_workers
        self.shuffle_buffer, self.shuffle_shards = shuffle_buffer, shuffle_shards
        self.seed, self.epoch, self.decode, self.policy = seed, epoch, decode, policy
        self.consumed = 0
        geo = self.manifest["geometry"]
        self.cameras: list[str] = list(geo["cameras"])
        self.frames_shape: tuple[int, ...] = tuple(int(x) for x in geo["frames_shape"])
        self.telemetry_columns: list[str] = list(self.manifest["telemetry_columns"])
        self._shards = [s for s in self.manifest["shards"] if split is None or s["split"] == split]
        # global sample list: (shard index, position in shard, key)
        self._shard_samples: list[list[int]] = []
        self.samples: list[tuple[int, int, str]] = []
        for si, s in enumerate(self._shards):
            ids = []
            for pos, key in enumerate(s["keys"]):
                ids.append(len(self.samples))
                self.samples.append((si, pos, key))
            self._shard_samples.append(ids)
        self._open: dict[int, _TarShard | _ArrowShard] = {}
        self._order_cache: tuple[int, list[int]] | None = None

    # -- partition -------------------------------------------------------------------
    @property
    def slots(self) -> int:
        return self.world_size * self.num_workers

    def per_slot(self) -> int:
        n = len(self.samples)
        return n // self.slots if self.policy == "truncate" else math.ceil(n / self.slots)

    def __len__(self) -> int:
        """Samples this reader hands out per epoch (the same for every rank and worker)."""
        return self.per_slot()

    def epoch_sequence(self, epoch: int) -> list[int]:
        """The epoch's global sample sequence (before cutting into blocks): shards permuted with (seed, epoch)."""
        order = list(range(len(self._shards)))
        if self.shuffle_shards and len(order) > 1:
            order = [int(i) for i in np.random.default_rng([self.seed, epoch, 0x5A]).permutation(len(order))]
        return [i for si in order for i in self._shard_samples[si]]

    def epoch_samples(self, epoch: int | None = None) -> list[int]:
        """All sample indices handed out in ``epoch`` over all slots (with repeats under ``pad``)."""
        e = self.epoch if epoch is None else epoch
        seq = self.epoch_sequence(e)
        total = self.per_slot() * self.slots
        if total > len(seq) and seq:
            seq = seq + [seq[i % len(seq)] for i in range(total - len(seq))]
        return seq[:total]

    def block(self, epoch: int) -> list[int]:
        seq = self.epoch_samples(epoch)
        per = self.per_slot()
        g = self.rank * self.num_workers + self.worker
        return seq[g * per : (g + 1) * per]

    def order(self, epoch: int | None = None) -> list[int]:
        """This reader's sample indices for ``epoch`` in the order handed out (after the shuffle buffer)."""
        e = self.epoch if epoch is None else epoch
        if self._order_cache is not None and self._order_cache[0] == e:
            return self._order_cache[1]
        stream = self.block(e)
        if self.shuffle_buffer <= 1:
            out = list(stream)
        else:
            rng = np.random.default_rng([self.seed, e, self.rank, self.worker, 0xB0F])
            buf: list[int] = []
            out = []
            for x in stream:
                if len(buf) < self.shuffle_buffer:
                    buf.append(x)
                    continue
                j = int(rng.integers(len(buf)))
                out.append(buf[j])
                buf[j] = x
            out.extend(buf[int(j)] for j in rng.permutation(len(buf)))
        self._order_cache = (e, out)
        return out

    # -- state -----------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.consumed = int(epoch), 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "dataset": f"{self.manifest['name']}@{self.manifest['version']}",
            "split": self.split,
            "seed": self.seed,
            "epoch": self.epoch,
            "consumed": self.consumed,
            "rank": self.rank,
            "world_size": self.world_size,
            "worker": self.worker,
            "num_workers": self.num_workers,
            "shuffle_buffer": self.shuffle_buffer,
            "shuffle_shards": self.shuffle_shards,
            "policy": self.policy,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` left off. The partition (dataset, split, seed, ranks, workers,
        buffer, policy) must be the same; raises ValueError otherwise."""
        mine = self.state_dict()
        for k in ("dataset", "split", "seed", "rank", "world_size", "worker", "num_workers", "shuffle_buffer", "shuffle_shards", "policy"):
            if state.get(k) != mine[k]:
                raise ValueError(f"loader state is for {k}={state.get(k)!r}, this loader has {k}={mine[k]!r}")
        consumed = int(state["consumed"])
        if not 0 <= consumed <= self.per_slot():
            raise ValueError(f"loader state consumed={consumed} is outside 0..{self.per_slot()}")
        self.epoch, self.consumed = int(state["epoch"]), consumed

    # -- reading ---------------------------------------------------------------------
    def _shard(self, si: int) -> _TarShard | _ArrowShard:
        """The open shard ``si`` (at most ``max_open_shards`` stay open, least recently used closed
        first; numpy views of a closed Arrow shard stay valid: Arrow keeps the mapping alive)."""
        sh = self._open.pop(si, None)
        if sh is None:
            p = self.path / self._shards[si]["name"]
            sh = _TarShard(p) if self.format == "webdataset" else _ArrowShard(p)
            self._idents.pop(si, None)  # taken again: the file may have changed since
            while len(self._open) >= self.max_open_shards:
                self._open.pop(next(iter(self._open))).close()
        self._open[si] = sh  # most recently used last
        return sh

    def _shard_digests(self, name: str) -> dict[str, Any]:
        """The digests of shard ``name`` from ``index.arrow``: ``{key: {member: sha256}}`` (tar) or
        ``{key: sha256}`` (Arrow). The index is read once, after checking it against the manifest."""
        if self._digests is None:
            import pyarrow as pa

            ip = self.path / INDEX_NAME
            want = self.manifest.get("index", {}).get("sha256")
            if not ip.is_file():
                raise DatasetError(str(ip), "index is missing, so samples cannot be checked (verify=False reads without)", code="index_missing")
            if want and sha256_file(ip) != want:
                raise DatasetError(str(ip), "index sha256 differs from the manifest", code="index_corrupt")
            with pa.memory_map(str(ip), "r") as mm:
                t = pa.ipc.open_file(mm).read_all().select(["shard", "key", "member", "sha256"])
            mine = {s["name"] for s in self._shards}
            out: dict[str, dict[str, Any]] = {}
            arrow = self.format != "webdataset"
            for shard, key, member, sha in zip(*(t.column(c).to_pylist() for c in ("shard", "key", "member", "sha256"))):
                if shard not in mine:
                    continue
                if arrow:
                    out.setdefault(shard, {})[key] = sha
                else:
                    out.setdefault(shard, {}).setdefault(key, {})[member] = sha
            self._digests = out
        return self._digests.get(name, {})

    def _checked(self, si: int) -> set[str]:
        """The keys of shard ``si`` this process has already checked (the shard file's identity,
        path, size and modification time, is taken when the shard is opened, not per sample)."""
        ident = self._idents.get(si)
        if ident is None:
            p = self.path / self._shards[si]["name"]
            st = p.stat()
            ident = self._idents[si] = (str(p), st.st_size, st.st_mtime_ns)
        return _CHECKED.setdefault(ident, set())

    def _check_tar(self, name: str, key: str, members: dict[str, memoryview]) -> None:
        want = dict(self._shard_digests(name).get(key, {}))
        for ext, data in members.items():
            member = f"{key}.{ext}"
            sha = want.pop(member, None)
            if sha is None:
                raise CorruptSample(str(self.path / name), "member is not in the dataset index", key=key, member=member, code="unexpected_member")
            if hashlib.sha256(data).hexdigest() != sha:
                raise CorruptSample(str(self.path / name), "member bytes differ from the dataset index (sha256)", key=key, member=member)
        if want:
            raise CorruptSample(str(self.path / name), f"members missing from the shard: {sorted(want)}", key=key, member=min(want),
                                code="member_missing")

    def _check_arrow(self, name: str, key: str, frames: np.ndarray, telemetry: np.ndarray) -> None:
        h = hashlib.sha256(np.ascontiguousarray(frames))
        h.update(np.ascontiguousarray(telemetry))
        if self._shard_digests(name).get(key) != h.hexdigest():
            raise CorruptSample(str(self.path / name), "sample tensors differ from the dataset index (sha256)", key=key, member="frames")

    def _corrupt(self, index: int, exc: FleetError) -> None:
        """Skip sample ``index`` (logged, recorded) under ``on_corrupt="skip"``; else raise ``exc``
        (a CorruptSample naming the sample)."""
        key = self.samples[index][2]
        if not isinstance(exc, CorruptSample):
            shard = self.path / self._shards[self.samples[index][0]]["name"]
            exc = CorruptSample(str(shard), exc.problem, key=key, member=getattr(exc, "member", None), code=exc.code or "sample_corrupt")
        if self.on_corrupt == "raise":
            raise exc
        log.warning("skipped sample %s: %s", key, exc)
        self.skipped.append((key, str(exc)))

    def _read_checked(self, index: int, *, out: dict[str, np.ndarray] | None = None) -> dict[str, Any] | None:
        """:meth:`read`, with corrupt samples handled as ``on_corrupt`` says (None: skipped)."""
        import pyarrow as pa

        try:
            return self.read(index, out=out)
        except (ShardError, DatasetError, OSError, pa.ArrowInvalid) as exc:
            err = exc if isinstance(exc, FleetError) else DatasetError(str(self.path), f"shard does not read ({exc})", code="shard_unreadable")
            self._corrupt(index, err)
            return None

    def close(self) -> None:
        for sh in self._open.values():
            sh.close()
        self._open = {}

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, AttributeError):
            pass

    def read(self, index: int, *, out: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Sample ``index`` (into ``self.samples``). ``out`` (tar only): arrays to decode into."""
        si, pos, key = self.samples[index]
        sh = self._shard(si)
        if isinstance(sh, _ArrowShard):
            b, row = sh.locate(pos)
            cols = sh.batch(b)
            if self.verify:
                done = self._checked(si)
                if key not in done:
                    self._check_arrow(self._shards[si]["name"], key, cols["frames"][row], cols["telemetry"][row])
                    done.add(key)
            return {
                "__key__": cols["key"][row],
                "clip_id": cols["clip_id"][row],
                "split": cols["split"][row],
                "trigger": cols["trigger"][row],
                "frames": cols["frames"][row],
                "valid": cols["valid"][row].astype(bool),
                "telemetry": cols["telemetry"][row],
                "times_ns": cols["times_ns"][row],
                "record": json.loads(cols["record"][row]),
            }
        data, ts = sh.read(key)
        members = {ext: data[off : off + size] for ext, off, size in ts.members}
        if self.verify:
            done = self._checked(si)
            if key not in done:
                self._check_tar(self._shards[si]["name"], key, members)
                done.add(key)
        if not self.decode:
            return {"__key__": key, "members": {ext: bytes(v) for ext, v in members.items()}}
        return self._decode_tar(key, members, out)

    def _decode_tar(self, key: str, members: dict[str, memoryview], out: dict[str, np.ndarray] | None) -> dict[str, Any]:
        import simplejpeg

        meta = json.loads(bytes(members["json"]))
        C, F = self.frames_shape[0], self.frames_shape[1]
        frames = out["frames"] if out is not None else np.empty(self.frames_shape, dtype=np.uint8)
        valid = out["valid"] if out is not None else np.empty((C, F), dtype=bool)
        digits = int(meta.get("frame_digits", 3))
        for ci, cam in enumerate(self.cameras):
            for fi in range(F):
                mv = members.get(f"{cam}.{fi:0{digits}d}.jpg")
                if mv is None:
                    frames[ci, fi] = 0
                    valid[ci, fi] = False
                    continue
                try:
                    simplejpeg.decode_jpeg(mv, colorspace="RGB", buffer=frames[ci, fi])
                except ValueError as exc:
                    raise ShardError(str(self.path), f"JPEG does not decode ({exc})", member=f"{key}.{cam}.{fi:0{digits}d}.jpg", code="member_undecodable") from exc
                valid[ci, fi] = True
        tel = _npy(members["telemetry.npy"])
        if out is not None:
            out["telemetry"][...] = tel
            tel = out["telemetry"]
        rec = meta.get("record", {})
        return {
            "__key__": key,
            "clip_id": rec.get("clip_id"),
            "split": rec.get("split"),
            "trigger": rec.get("trigger"),
            "frames": frames,
            "valid": valid,
            "telemetry": tel,
            "times_ns": np.asarray(meta["sample_times_ns"], dtype=np.int64),
            "record": rec,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = self.order(self.epoch)
        while self.consumed < len(order):
            idx = order[self.consumed]
            sample = self._read_checked(idx)
            self.consumed += 1
            if sample is not None:
                yield sample
        self.set_epoch(self.epoch + 1)

    def batches(self, batch_size: int, *, drop_last: bool = False, buffers: int = 0) -> Iterator[dict[str, Any]]:
        """Batches as numpy arrays (``collate_numpy`` layout): each sample is decoded (tar: JPEG
        straight into the batch array) or copied (Arrow: from the mapped file) into the batch.

        ``buffers=0`` allocates fresh arrays per batch. ``buffers=k`` rotates ``k`` preallocated
        sets (no page faults on fresh memory; the way to feed pinned / device copies): a batch's
        arrays are then overwritten ``k`` batches later, so copy or consume them before that.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, found {batch_size}")
        if buffers < 0:
            raise ValueError(f"buffers must be >= 0, found {buffers}")
        order = self.order(self.epoch)
        C, F, T = self.frames_shape[0], self.frames_shape[1], len(self.telemetry_columns)
        pool: list[dict[str, np.ndarray]] = []
        turn = 0

        def arrays(n: int) -> dict[str, np.ndarray]:
            nonlocal turn
            if buffers == 0:
                return _alloc(n)
            if len(pool) < buffers:
                pool.append(_alloc(batch_size))
            a = pool[turn % buffers]
            turn += 1
            return {k: v[:n] for k, v in a.items()}

        def _alloc(n: int) -> dict[str, np.ndarray]:
            return {
                "frames": np.empty((n, *self.frames_shape), dtype=np.uint8),
                "valid": np.empty((n, C, F), dtype=bool),
                "telemetry": np.empty((n, F, T), dtype=np.float32),
                "times_ns": np.empty((n, F), dtype=np.int64),
            }

        while self.consumed < len(order):
            n = min(batch_size, len(order) - self.consumed)
            if n < batch_size and drop_last:
                self.consumed = len(order)
                break
            pos = self.consumed  # a skipped (corrupt) sample is replaced by the next one of the order
            if not self.decode and self.format == "webdataset":
                got: list[dict[str, Any]] = []
                while len(got) < n and pos < len(order):
                    s = self._read_checked(order[pos])
                    pos += 1
                    if s is not None:
                        got.append(s)
                self.consumed = pos
                if not got or (drop_last and len(got) < batch_size):
                    continue
                yield collate_numpy(got)
                continue
            out = arrays(n)
            items = []
            while len(items) < n and pos < len(order):
                i = len(items)
                if self.format == "webdataset":
                    s = self._read_checked(order[pos], out={"frames": out["frames"][i], "valid": out["valid"][i], "telemetry": out["telemetry"][i]})
                else:
                    s = self._read_checked(order[pos])
                    if s is not None:
                        np.copyto(out["frames"][i], s["frames"])
                        np.copyto(out["valid"][i], s["valid"])
                        np.copyto(out["telemetry"][i], s["telemetry"])
                pos += 1
                if s is None:
                    continue
                np.copyto(out["times_ns"][i], s["times_ns"])
                items.append(s)
            self.consumed = pos
            if not items or (drop_last and len(items) < batch_size):
                continue
            if len(items) < n:
                out = {k: v[: len(items)] for k, v in out.items()}
            yield {
                "__key__": [s["__key__"] for s in items],
                "clip_id": [s["clip_id"] for s in items],
                "split": [s["split"] for s in items],
                "trigger": [s["trigger"] for s in items],
                **out,
                "record": [s["record"] for s in items],
            }
        if self.consumed >= len(order):
            self.set_epoch(self.epoch + 1)


# ----------------------------------------------------------------------------------------
# collate
# ----------------------------------------------------------------------------------------
_ARRAYS = ("frames", "valid", "telemetry", "times_ns")


def collate_numpy(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of samples: arrays get a leading batch axis, other fields become lists."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {}
    for k in samples[0]:
        if k in _ARRAYS:
            out[k] = np.stack([s[k] for s in samples])
        else:
            out[k] = [s[k] for s in samples]
    return out


def collate_torch(samples: Sequence[dict[str, Any]] | dict[str, Any], *, pin_memory: bool = True) -> dict[str, Any]:
    """Like :func:`collate_numpy` (or convert an already collated batch) but arrays become torch
    tensors; pinned when ``pin_memory`` and CUDA is available. Needs torch (the ``train`` extra)."""
    import torch

    batch = samples if isinstance(samples, dict) else collate_numpy(samples)
    pin = pin_memory and torch.cuda.is_available()
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(v) if v.flags.writeable else np.array(v))
            out[k] = t.pin_memory() if pin else t
        else:
            out[k] = v
    return out


def torch_dataset(path: str | os.PathLike[str], *, batch_size: int | None = None, collate: Callable[[Any], Any] | None = None,
                  **loader_options: Any) -> Any:
    """A ``torch.utils.data.IterableDataset`` over the dataset for a plain ``DataLoader``: each
    DataLoader worker becomes one loader slot (``worker``/``num_workers`` from
    ``torch.utils.data.get_worker_info()``). With ``batch_size`` it yields collated batches
    (use ``DataLoader(ds, batch_size=None)``); ``collate`` defaults to :func:`collate_torch`
    without pinning (let the DataLoader pin). The dataset pickles (a module-level class), so workers
    may start by fork, forkserver or spawn."""
    opts = dict(loader_options)
    epoch = int(opts.pop("epoch", 0))
    return _torch_dataset_class()(os.fspath(path), batch_size, collate or functools.partial(collate_torch, pin_memory=False), opts, epoch)


_TORCH_DATASET: type | None = None


def _torch_dataset_class() -> type:
    """``TorchDataset``, made on first use (torch is an optional dependency) and kept as a module
    attribute, so pickle finds it by name (``__getattr__`` below makes it in a fresh worker)."""
    global _TORCH_DATASET
    if _TORCH_DATASET is None:
        import torch
        from torch.utils.data import IterableDataset, get_worker_info

        class TorchDataset(IterableDataset):  # type: ignore[misc]
            def __init__(self, path: str, batch_size: int | None, collate: Callable[[Any], Any], opts: dict[str, Any], epoch: int) -> None:
                super().__init__()
                self.path, self.batch_size, self.collate, self.opts, self.epoch = path, batch_size, collate, opts, epoch

            def set_epoch(self, epoch: int) -> None:
                self.epoch = epoch

            def __iter__(self) -> Iterator[Any]:
                info = get_worker_info()
                w, nw = (0, 1) if info is None else (info.id, info.num_workers)
                loader = DatasetLoader(self.path, worker=w, num_workers=nw, epoch=self.epoch, **self.opts)
                try:
                    if self.batch_size is None:
                        for s in loader:
                            yield {k: (torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                    else:
                        for b in loader.batches(self.batch_size):
                            yield self.collate(b)
                finally:
                    loader.close()

        TorchDataset.__module__, TorchDataset.__qualname__ = __name__, "TorchDataset"
        _TORCH_DATASET = TorchDataset
    return _TORCH_DATASET


def __getattr__(name: str) -> Any:
    if name == "TorchDataset":
        return _torch_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
