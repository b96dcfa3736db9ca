"""Clip store: sample encoding, safe tar I/O, shard packing, manifest and verification.

Everything here runs on real bytes: real JPEGs (simplejpeg), real tars (tarfile), read back
with the real ``webdataset`` library.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from fleetcore.store import shards as cs
from fleetcore.store.fs import sha256_file
from fleetcore.store import tario
from fleetcore.errors import FleetError
from fleetcore.store.sample import SampleError, decode_sample, encode_images, encode_sample

CAMERAS = ("front", "left", "right")
N_CLIPS = 6
N_SAMPLES = 4
H, W = 24, 32


def smooth_frame(rng: np.random.Generator) -> np.ndarray:
    """A smooth random RGB image (JPEG reproduces it closely)."""
    coarse = rng.integers(30, 225, size=(3, 4, 3)).astype(np.float64)
    img = np.kron(coarse, np.ones((H // 3, W // 4, 1)))
    yy, xx = np.mgrid[0:H, 0:W]
    img += (xx[..., None] * 0.5 + yy[..., None] * 0.3)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_clip(i: int, rng: np.random.Generator, *, missing: tuple[str, int] | None = None) -> dict:
    t = 1_000_000_000 + np.arange(N_SAMPLES, dtype=np.int64) * 100_000_000
    frames = {c: [smooth_frame(rng) for _ in range(N_SAMPLES)] for c in CAMERAS}
    if missing is not None:
        frames[missing[0]][missing[1]] = None
    pts = {c: t + 3_000_000 + j for j, c in enumerate(CAMERAS)}
    offs = {c: pts[c] - t for c in CAMERAS}
    tel = {
        "speed_mps": rng.normal(12.0, 1.0, N_SAMPLES),
        "accel_lon_mps2": rng.normal(0.0, 2.0, N_SAMPLES),
        "steering_angle_rad": np.array([0.1, np.nan, -0.2, 0.0]),
    }
    record = {
        "clip_id": f"clip-{i:03d}",
        "vehicle_id": "veh-a",
        "drive_id": "drive-1",
        "window": [int(t[0]), int(t[-1])],
        "triggers": ["hard_brake"],
        "source_digests": {"cameras/front/000.mp4": "ab" * 32},
        "config_version": "cfg-1",
    }
    return dict(key=f"clip-{i:03d}", frames=frames, sample_times_ns=t, pts_ns=pts, offset_ns=offs, telemetry=tel, record=record)


@pytest.fixture(scope="module")
def clips() -> list[dict]:
    rng = np.random.default_rng(1234)
    return [make_clip(i, rng, missing=("left", 2) if i == 1 else None) for i in range(N_CLIPS)]


def encode(clip: dict) -> list[tuple[str, bytes]]:
    c = dict(clip)
    return encode_sample(c.pop("key"), **c)


def stage(clips: list[dict], staging: Path) -> list[cs.Fragment]:
    # written in reverse order: packing must sort by key
    return [cs.write_fragment(staging, c["key"], encode(c)) for c in reversed(clips)]


MAX_BYTES = 60_000


def build_store(clips: list[dict], root: Path) -> tuple[list[cs.Fragment], list[cs.ShardInfo], Path]:
    frags = stage(clips, root / "staging")
    shards = cs.pack_shards(frags, root / "store", prefix="clips", max_bytes=MAX_BYTES)
    cs.write_store_manifest(root / "store", shards, extra={"config_version": "cfg-1", "run": "test"})
    return frags, shards, root / "store"


def tree_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


# --------------------------------------------------------------------------------------
# sample encoding
# --------------------------------------------------------------------------------------
def test_encode_sample_members_order_and_determinism(clips):
    members = encode(clips[1])
    names = [n for n, _ in members]
    assert names[0] == "clip-001.json"
    assert names[-1] == "clip-001.telemetry.npy"
    frames = names[1:-1]
    assert frames[:N_SAMPLES] == [f"clip-001.front.{i:03d}.jpg" for i in range(N_SAMPLES)]
    assert "clip-001.left.002.jpg" not in names  # the missing frame has no member
    assert len(frames) == len(CAMERAS) * N_SAMPLES - 1
    assert members == encode(clips[1])  # deterministic bytes
    meta = json.loads(members[0][1])
    assert meta["missing_frames"] == {"front": [], "left": [2], "right": []}
    assert meta["pts_ns"]["left"][2] is None and meta["offset_ns"]["left"][2] is None
    assert meta["record"] == clips[1]["record"]
    assert meta["telemetry_columns"] == ["speed_mps", "accel_lon_mps2", "steering_angle_rad"]
    assert members[0][1] == json.dumps(meta, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def test_threaded_encoding_gives_the_same_members_and_the_first_error(clips):
    """``threads`` only spreads the JPEG encoding: the members are byte-identical, and a bad frame
    is reported as the first one in member order, as with one thread."""
    for clip in clips[:2]:
        assert encode(dict(clip, threads=3)) == encode(clip)
    bad = dict(clips[0])
    frames = {cam: list(fs) for cam, fs in bad["frames"].items()}
    frames["left"][1] = np.zeros((H, W), np.uint8)
    frames["right"][0] = np.zeros((H, W, 4), np.uint8)
    bad["frames"] = frames
    for threads in (1, 3):
        with pytest.raises(SampleError, match=r"camera 'left' frame 1: expected an RGB uint8"):
            encode(dict(bad, threads=threads))
    frames["left"][1] = np.zeros((H + 2, W, 3), np.uint8)  # a size change comes before the later bad frame
    for threads in (1, 3):
        with pytest.raises(SampleError, match=r"camera 'left' frame 1: size"):
            encode(dict(bad, threads=threads))


def test_decode_sample_round_trip(clips):
    clip = clips[1]
    d = decode_sample(dict(encode(clip)))
    assert d.key == "clip-001" and d.cameras == list(CAMERAS)
    assert d.record == clip["record"]
    np.testing.assert_array_equal(d.sample_times_ns, clip["sample_times_ns"])
    assert d.missing_frames == {"front": [], "left": [2], "right": []}
    for cam in CAMERAS:
        for i in range(N_SAMPLES):
            orig = clip["frames"][cam][i]
            if orig is None:
                assert d.frames[cam][i] is None
                continue
            assert d.frames[cam][i].shape == orig.shape
            assert np.abs(d.frames[cam][i].astype(int) - orig.astype(int)).mean() < 4.0
    assert d.pts_ns["front"] == [int(v) for v in clip["pts_ns"]["front"]]
    for col, v in clip["telemetry"].items():
        np.testing.assert_array_equal(d.telemetry[col], v.astype(np.float32))


def test_png_frames_are_lossless(clips):
    clip = dict(clips[0], image_format="png")
    members = encode(clip)
    assert members[1][0] == "clip-000.front.000.png"
    d = decode_sample(dict(members))
    np.testing.assert_array_equal(d.frames["right"][3], clips[0]["frames"]["right"][3])


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(key="clip.1"), "no dots"),
        (dict(sample_times_ns=np.array([3, 2, 1, 0], dtype=np.int64)), "strictly increasing"),
        (dict(telemetry={"speed_mps": np.zeros(3)}), r"expected shape \(4,\)"),
        (dict(record={"bad": float("nan")}), "JSON"),
    ],
)
def test_encode_sample_rejects_bad_input(clips, change, match):
    with pytest.raises(SampleError, match=match):
        encode(dict(clips[0], **change))


def test_encode_sample_rejects_non_rgb_frame(clips):
    clip = dict(clips[0])
    clip["frames"] = dict(clip["frames"], front=[np.zeros((H, W), np.uint8)] * N_SAMPLES)
    with pytest.raises(SampleError, match=r"RGB uint8 array \(H, W, 3\)"):
        encode(clip)


@pytest.mark.parametrize("threads", [1, 3])
def test_images_encoded_ahead_give_the_same_sample_bytes(clips, threads):
    c = dict(clips[1])  # one frame missing
    key = c.pop("key")
    images = encode_images(key, c["frames"], threads=threads)
    assert len(images) == len(CAMERAS) * N_SAMPLES - 1
    assert encode_sample(key, **c, images=images) == encode(clips[1])
    with pytest.raises(SampleError, match=r"images: expected 11 encoded images \(one per present frame\), found 10"):
        encode_sample(key, **c, images=images[:-1])


def test_a_frame_that_fails_ahead_raises_from_encode_sample_in_member_order(clips):
    c = dict(clips[0])
    key = c.pop("key")
    c["frames"] = dict(c["frames"], left=[*c["frames"]["left"][:3], np.zeros((H, W), np.uint8)])
    images = encode_images(key, c["frames"], threads=2)  # no raise here: the error waits in its place
    assert isinstance(images[N_SAMPLES + 3], SampleError) and not any(isinstance(x, SampleError) for x in images[: N_SAMPLES + 3])
    with pytest.raises(SampleError, match=r"camera 'left' frame 3: expected an RGB uint8 array"):
        encode_sample(key, **c, images=images)
    with pytest.raises(SampleError, match="jpeg_quality must be an int"):
        encode_images(key, c["frames"], jpeg_quality=0)


# --------------------------------------------------------------------------------------
# tar I/O
# --------------------------------------------------------------------------------------
def _raw_tar(path: Path, build) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"x", **kw) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    for k, v in kw.items():
        setattr(ti, k, v)
    tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)


@pytest.mark.parametrize(
    "build, bad_member, reason",
    [
        (lambda t: (_add(t, "ok.json"), _add(t, "../evil.json")), "../evil.json", "'..'"),
        (lambda t: _add(t, "/etc/passwd.json"), "/etc/passwd.json", "absolute"),
        (lambda t: _add(t, "C:evil.json"), "C:evil.json", "drive letter"),
        (
            lambda t: (_add(t, "ok.json"), _add(t, "k.link.json", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")),
            "k.link.json",
            "symbolic link",
        ),
        (lambda t: _add(t, "k.hard.json", b"", type=tarfile.LNKTYPE, linkname="ok.json"), "k.hard.json", "hard link"),
        (lambda t: _add(t, "k.dev", b"", type=tarfile.CHRTYPE), "k.dev", "device"),
    ],
)
def test_tar_reader_rejects_unsafe_members(tmp_path, build, bad_member, reason):
    p = _raw_tar(tmp_path / "bad.tar", build)
    for read in (tario.scan_tar, lambda x: list(tario.iter_members(x)), tario.index_tar):
        with pytest.raises(tario.UnsafeTarMember, match=reason) as ei:
            read(p)
        assert isinstance(ei.value, FleetError)
        assert ei.value.member == bad_member and ei.value.shard == str(p)


def test_write_tar_is_deterministic_and_refuses_unsafe_names(tmp_path):
    members = [("a.json", b"{}"), ("a.front.000.jpg", b"\xff\xd8" * 300), ("b" * 150 + ".json", b"long name")]
    data = tario.tar_bytes(members)
    assert data == tario.tar_bytes(members)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == [n for n, _ in members]
    assert all(i.mtime == 0 and i.uid == 0 and i.gid == 0 and i.uname == "" and i.mode == 0o644 for i in infos)
    p = tmp_path / "t.tar"
    p.write_bytes(data)
    got = [(m.name, m.data) for m in tario.iter_members(p)]
    assert got == members
    with pytest.raises(tario.UnsafeTarMember, match=r"'\.\.'"):
        tario.tar_bytes([("../x.json", b"")])


def test_tar_reader_detects_truncation(tmp_path):
    data = tario.tar_bytes([("a.json", b"{}"), ("a.front.000.jpg", b"y" * 3000)])
    p = tmp_path / "t.tar"
    for cut in (700, 1024, 2000, 4096):  # inside a header, at a header, inside data, before the EOF marker
        p.write_bytes(data[:cut])
        with pytest.raises(tario.ShardError, match="truncated") as ei:
            tario.scan_tar(p)
        assert ei.value.code == "tar_truncated"


# --------------------------------------------------------------------------------------
# packing
# --------------------------------------------------------------------------------------
def test_pack_shards_reads_back_with_webdataset(tmp_path, clips):
    frags, shards, store = build_store(clips, tmp_path)
    assert len(shards) >= 3, [s.bytes for s in shards]  # small max_bytes -> several shards
    assert all(s.bytes <= MAX_BYTES for s in shards)
    assert [k for s in shards for k in s.keys] == sorted(c["key"] for c in clips)
    token = shards[0].name.split("-")[1]
    assert [s.name for s in shards] == [f"clips-{token}-{i:06d}.tar" for i in range(len(shards))]
    assert cs.store_shard_paths(store) == [s.path for s in shards]

    by_key = {c["key"]: c for c in clips}
    seen = []
    for sample in wds.WebDataset([s.path for s in shards], shardshuffle=False).decode("rgb"):
        key = sample["__key__"]
        clip = by_key[key]
        seen.append(key)
        assert sample["json"]["record"] == clip["record"]
        tel = sample["telemetry.npy"]
        assert tel.dtype == np.float32 and tel.shape == (N_SAMPLES, 3)
        np.testing.assert_array_equal(tel[:, 0], clip["telemetry"]["speed_mps"].astype(np.float32))
        np.testing.assert_array_equal(np.isnan(tel[:, 2]), [False, True, False, False])
        for cam in CAMERAS:
            for i in range(N_SAMPLES):
                ext = f"{cam}.{i:03d}.jpg"
                orig = clip["frames"][cam][i]
                if orig is None:
                    assert ext not in sample
                    assert i in sample["json"]["missing_frames"][cam]
                    continue
                img = sample[ext]  # "rgb": float32 in [0, 1], (H, W, 3)
                assert img.shape == (H, W, 3)
                assert np.abs(img * 255.0 - orig).mean() < 4.0
    assert seen == sorted(by_key)
    # raw (undecoded) WebDataset samples decode with fleetcore.store.sample.decode_sample
    raw = list(wds.WebDataset([s.path for s in shards], shardshuffle=False))
    assert [r["__key__"] for r in raw] == sorted(by_key)
    d = decode_sample(raw[1])
    assert d.key == "clip-001" and d.record == by_key["clip-001"]["record"] and d.frames["left"][2] is None


def test_pack_is_deterministic(tmp_path, clips):
    _, shards_a, store_a = build_store(clips, tmp_path / "a")
    _, shards_b, store_b = build_store(clips, tmp_path / "b")
    assert [s.name for s in shards_a] == [s.name for s in shards_b]
    assert tree_bytes(store_a) == tree_bytes(store_b)  # shards and manifest, byte for byte
    assert cs.verify_store(store_a) == []
    manifest = cs.read_store_manifest(store_a)
    assert manifest["extra"] == {"config_version": "cfg-1", "run": "test"}
    assert [e["name"] for e in manifest["shards"]] == [s.name for s in shards_a]
    assert manifest["n_samples"] == N_CLIPS
    for e, s in zip(manifest["shards"], shards_a):
        assert (e["samples"], e["bytes"], e["sha256"], e["keys"]) == (s.samples, s.bytes, s.sha256, list(s.keys))
    # a different max_bytes is a different packing, with different names
    other = cs.pack_shards([f.path for f in stage(clips, tmp_path / "c" / "staging")], tmp_path / "c" / "store", prefix="clips", max_bytes=10**9)
    assert len(other) == 1 and other[0].name not in {s.name for s in shards_a}


def test_index_offsets_give_exact_member_bytes(tmp_path, clips):
    _, shards, _ = build_store(clips, tmp_path)
    table = cs.shard_index_table(shards)  # validates against schemas.SHARD_INDEX
    assert table.num_rows == sum(len(encode(c)) for c in clips)
    for s in shards:
        assert list(s.index) == tario.index_tar(s.path)  # packing's index == a fresh scan
        with tarfile.open(s.path) as tar:
            for row in s.index:
                ti = tar.getmember(row["member"])
                assert (row["header_offset"], row["data_offset"], row["size"]) == (ti.offset, ti.offset_data, ti.size)
                assert tario.read_member(s.path, row["data_offset"], row["size"]) == tar.extractfile(ti).read()
    expected = dict(encode(clips[1]))
    s = next(s for s in shards if "clip-001" in s.keys)
    rows = [r for r in s.index if r["key"] == "clip-001"]
    assert {r["member"]: tario.read_member(s.path, r["data_offset"], r["size"]) for r in rows} == expected
    d = cs.read_sample(s.path, rows)
    assert d.key == "clip-001" and d.frames["left"][2] is None


def test_single_oversize_sample_gets_its_own_shard(tmp_path, clips):
    frags = stage(clips[:3], tmp_path / "staging")
    shards = cs.pack_shards(frags, tmp_path / "store", prefix="big", max_bytes=1000)
    assert [s.keys for s in shards] == [("clip-000",), ("clip-001",), ("clip-002",)]
    assert all(s.bytes > 1000 for s in shards)


def test_pack_rejects_bad_fragments(tmp_path, clips):
    frags = stage(clips[:2], tmp_path / "staging")
    with pytest.raises(cs.StoreError, match="appears twice"):
        cs.pack_shards([frags[0], frags[0].path], tmp_path / "store", prefix="p")
    # a fragment holding two samples
    two = tmp_path / "staging2" / "clip-000.tar"
    two.parent.mkdir()
    two.write_bytes(tario.tar_bytes(encode(clips[0]) + encode(clips[1])))
    with pytest.raises(tario.ShardError, match="one sample"):
        cs.pack_shards([two], tmp_path / "store", prefix="p")
    # a fragment changed after it was written
    data = bytearray(Path(frags[0].path).read_bytes())
    data[600] ^= 0xFF  # inside the first member's data
    Path(frags[0].path).write_bytes(bytes(data))
    with pytest.raises(tario.ShardError, match="differs from the one recorded"):
        cs.pack_shards(frags, tmp_path / "store", prefix="p")
    with pytest.raises(cs.StoreError, match="no dots"):
        cs.write_fragment(tmp_path / "s", "a.b", [("a.b.json", b"{}")])
    with pytest.raises(cs.StoreError, match="clip-9.<ext>"):
        cs.write_fragment(tmp_path / "s", "clip-9", [("clip-8.json", b"{}")])


# --------------------------------------------------------------------------------------
# verification and resumability
# --------------------------------------------------------------------------------------
def test_verify_store_finds_flipped_byte(tmp_path, clips):
    _, shards, store = build_store(clips, tmp_path)
    victim = shards[1]
    row = next(r for r in victim.index if r["member"].endswith(".right.001.jpg"))
    p = Path(victim.path)
    data = bytearray(p.read_bytes())
    data[row["data_offset"] + row["size"] // 2] ^= 0x01
    p.write_bytes(bytes(data))
    problems = cs.verify_store(store)
    assert problems, "a flipped byte must be found"
    assert problems[0].shard == victim.name and problems[0].code == "sha256_mismatch"
    assert {pr.shard for pr in problems} == {victim.name}
    located = [pr for pr in problems if pr.code == "sample_corrupt"]
    assert located and located[0].key == row["key"]


def test_verify_store_finds_damaged_header(tmp_path, clips):
    _, shards, store = build_store(clips, tmp_path)
    victim = shards[-1]
    row = victim.index[2]
    p = Path(victim.path)
    data = bytearray(p.read_bytes())
    data[row["header_offset"] + 5] ^= 0x20  # inside the member name: header checksum breaks
    p.write_bytes(bytes(data))
    problems = cs.verify_store(store)
    assert [pr.shard for pr in problems] == [victim.name, victim.name]
    assert problems[1].code == "tar_invalid" and victim.index[1]["member"] in problems[1].message


def test_verify_store_finds_truncated_shard(tmp_path, clips):
    _, shards, store = build_store(clips, tmp_path)
    victim = shards[0]
    p = Path(victim.path)
    p.write_bytes(p.read_bytes()[: victim.index[-2]["data_offset"] + 10])
    problems = cs.verify_store(store)
    assert problems[0].shard == victim.name and problems[0].code == "size_mismatch"
    assert any(pr.code == "tar_truncated" and pr.member == victim.index[-2]["member"] for pr in problems)
    # a missing shard and a missing manifest
    os.unlink(p)
    assert cs.verify_store(store)[0].code == "missing_shard"
    os.unlink(store / cs.MANIFEST_NAME)
    assert [pr.code for pr in cs.verify_store(store)] == ["manifest_missing"]
    with pytest.raises(cs.StoreError, match="manifest is missing"):
        cs.read_store_manifest(store)


def test_interrupted_pack_then_rerun_gives_same_result(tmp_path, clips):
    _, ref_shards, ref_store = build_store(clips, tmp_path / "ref")
    frags = stage(clips, tmp_path / "run" / "staging")
    store = tmp_path / "run" / "store"
    store.mkdir(parents=True)
    # a killed run left: a half-written temp of shard 1, a complete shard 0, a stale wrong shard 2
    shutil.copyfile(ref_shards[0].path, store / ref_shards[0].name)
    left = store / f".{ref_shards[1].name}.0123456789abcdef.tmp"
    left.write_bytes(Path(ref_shards[1].path).read_bytes()[:5000])
    os.utime(left, (time.time() - 7200, time.time() - 7200))  # the killed run was two hours ago
    (store / ref_shards[2].name).write_bytes(b"\0" * ref_shards[2].bytes)  # right size, wrong bytes
    before = os.stat(store / ref_shards[0].name).st_mtime_ns
    assert cs.verify_store(store)[0].code == "manifest_missing"  # no manifest until the run completes
    from fleetcore.store.cleanup import remove_orphans

    assert remove_orphans(str(store)) == [str(left)]  # what a curate run does when it starts
    shards = cs.pack_shards(frags, store, prefix="clips", max_bytes=MAX_BYTES)
    cs.write_store_manifest(store, shards, extra={"config_version": "cfg-1", "run": "test"})
    assert os.stat(store / ref_shards[0].name).st_mtime_ns == before  # complete shard not rewritten
    assert not list(store.glob(".*.tmp"))
    assert tree_bytes(store) == tree_bytes(ref_store)
    assert [s.sha256 for s in shards] == [s.sha256 for s in ref_shards]
    assert cs.verify_store(store) == []


def test_write_fragment_is_atomic_and_idempotent(tmp_path, clips):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / ".clip-000.tar.123.tmp").write_bytes(b"partial")  # left by a killed worker
    a = cs.write_fragment(staging, "clip-000", encode(clips[0]))
    b = cs.write_fragment(staging, "clip-000", encode(clips[0]))
    assert a == b and Path(a.path).name == "clip-000.tar"
    assert a.sha256 == sha256_file(a.path) and a.bytes == Path(a.path).stat().st_size
    shards = cs.pack_shards([*staging.glob("*.tar")], tmp_path / "store", prefix="p")
    assert [s.keys for s in shards] == [("clip-000",)]


def test_store_through_fsspec_uris_matches_local(tmp_path, clips):
    """Staging and store given as fsspec URIs (the in-memory filesystem stands in for an
    object store): same shard bytes, manifest and index as the local run."""
    import fsspec

    _, local_shards, local_store = build_store(clips[:4], tmp_path / "local")
    root = f"memory://clipstore-test-{tmp_path.name}"
    fs = fsspec.filesystem("memory")
    try:
        frags = [cs.write_fragment(f"{root}/staging", c["key"], encode(c)) for c in clips[:4]]
        assert frags[0].path == f"{root}/staging/clip-000.tar"
        shards = cs.pack_shards(frags, f"{root}/store", prefix="clips", max_bytes=MAX_BYTES)
        manifest = cs.write_store_manifest(f"{root}/store", shards, extra={"config_version": "cfg-1", "run": "test"})
        assert manifest == f"{root}/store/manifest.json"
        assert [s.name for s in shards] == [s.name for s in local_shards]
        for s, ls in zip(shards, local_shards):
            with fsspec.open(s.path, "rb") as f:
                assert f.read() == Path(ls.path).read_bytes()
            assert s.index == ls.index
        with fsspec.open(manifest, "rb") as f:
            assert f.read() == (local_store / cs.MANIFEST_NAME).read_bytes()
        assert not [p for p in fs.find(f"{root}/store") if p.endswith(".tmp")]
        assert cs.verify_store(f"{root}/store") == []
        row = shards[0].index[1]
        assert tario.read_member(shards[0].path, row["data_offset"], row["size"]) == dict(encode(clips[0]))[row["member"]]
        # corruption is found through the URI as well
        with fsspec.open(shards[1].path, "rb") as f:
            data = bytearray(f.read())
        data[shards[1].index[3]["data_offset"]] ^= 0xFF
        with fsspec.open(shards[1].path, "wb") as f:
            f.write(bytes(data))
        problems = cs.verify_store(f"{root}/store")
        assert problems[0].shard == shards[1].name and problems[0].code == "sha256_mismatch"
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)


def test_real_video_frames_round_trip(tmp_path, real_data):
    """Frames decoded from a real dashcam video survive encode -> pack -> WebDataset."""
    import av

    video = real_data / "video" / "udacity_lanelines_solidWhiteRight.mp4"
    frames, pts = [], []
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            pts.append(int(frame.pts * stream.time_base * 1_000_000_000))
            if len(frames) == 3:
                break
    t = np.asarray(pts, dtype=np.int64)
    members = encode_sample(
        "real-0",
        frames={"front": frames},
        sample_times_ns=t,
        pts_ns={"front": t},
        offset_ns={"front": np.zeros(3, np.int64)},
        telemetry={},
        record={"source": video.name},
    )
    frag = cs.write_fragment(tmp_path / "staging", "real-0", members)
    shards = cs.pack_shards([frag], tmp_path / "store", prefix="real")
    (sample,) = list(wds.WebDataset([shards[0].path], shardshuffle=False).decode("rgb8"))
    assert sample["json"]["image_size_hw"] == {"front": [540, 960]}
    assert sample["telemetry.npy"].shape == (3, 0)
    for i, orig in enumerate(frames):
        img = sample[f"front.{i:03d}.jpg"]
        assert img.shape == (540, 960, 3) and img.dtype == np.uint8
        assert np.abs(img.astype(int) - orig.astype(int)).mean() < 3.0
