"""Shared fixtures: real encoded video and real landing drives, made with the bundled ffmpeg."""

from __future__ import annotations

import http.client
import logging
import shutil
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import ffmpeg
import numpy as np
import pyarrow as pa
import pytest

from fleetcore.landing.drives import DriveWriter
from fleetcore.video.ffmpeg import run

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not SHARED_REAL.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_REAL}")
    return SHARED_REAL


def encode_testsrc(path: Path, *, seconds: float = 3.0, fps: int = 10, size: str = "160x120", codec: str = "libx264",
                   gop: int = 10, extra: dict[str, str] | None = None) -> Path:
    """Encode a real H.264 (or other codec) test pattern with the bundled ffmpeg (``extra``: more output options)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    src = ffmpeg.input(f"testsrc2=size={size}:rate={fps}:duration={seconds}", f="lavfi")
    opts = {"c:v": codec, "g": str(gop), "pix_fmt": "yuv420p", "threads": "1", **(extra or {})}
    run(src.output(str(path), **opts), path=path)
    return path


@pytest.fixture(scope="session")
def clip_3s(tmp_path_factory) -> Path:
    return encode_testsrc(tmp_path_factory.mktemp("video") / "clip.mp4")


def telemetry_table(t0_ns: int, seconds: float, hz: float = 50.0, speed: float = 12.0) -> pa.Table:
    n = int(seconds * hz)
    t = t0_ns + (np.arange(n) * (1e9 / hz)).astype(np.int64)
    return pa.table({
        "t_ns": pa.array(t, pa.int64()),
        "speed_mps": np.full(n, speed),
        "accel_lon_mps2": np.zeros(n),
        "steering_angle_rad": np.zeros(n),
        "lat_deg": np.full(n, 37.77),
        "lon_deg": np.full(n, -122.42),
    })


def build_drive(clip: Path, root: Path, vehicle: str = "veh-a", drive: str = "drive-1", *, cameras=("front", "left"),
                telemetry="default", t0_ns: int = 5_000_000_000, finish: bool = True) -> Path:
    """A landing drive whose cameras are copies of ``clip`` and whose telemetry is ``telemetry_table``
    (or the table given; None: no telemetry); ``finish=False`` leaves the upload incomplete."""
    w = DriveWriter(root, vehicle, drive)
    cams = []
    for name in cameras:
        rel = f"cameras/{name}/000.mp4"
        shutil.copyfile(clip, w.file(rel))
        cams.append({"name": name, "codec": "h264", "files": [{"path": rel, "start_ns": t0_ns, "frame_times": None}]})
    tel_ref = None
    if telemetry is not None:
        table = telemetry_table(t0_ns, 3.0) if isinstance(telemetry, str) else telemetry
        p = w.file("telemetry.parquet")
        import pyarrow.parquet as pq

        pq.write_table(table, p)  # raw write: tests plant bad telemetry on purpose
        tel_ref = {"path": "telemetry.parquet", "format": "parquet"}
    manifest = {"utc_offset_ns": 1_763_625_600_000_000_000, "cameras": cams, "telemetry": tel_ref, "source": "test"}
    if finish:
        w.finish(manifest)
    else:
        from fleetcore.landing.drives import MANIFEST, dumps_json

        (w.path / MANIFEST).write_bytes(dumps_json({"format_version": 1, "vehicle_id": vehicle, "drive_id": drive, **manifest}))
    return w.path


@pytest.fixture
def make_drive(clip_3s):
    """make_drive(root, vehicle, drive, cameras=("front", "left"), telemetry=<table or None>) -> drive folder."""

    def _make(root: Path, vehicle: str = "veh-a", drive: str = "drive-1", **kw) -> Path:
        return build_drive(clip_3s, root, vehicle, drive, **kw)

    return _make


#: Curate options of the simulated-fleet store: 5 Hz samples keep the labels and privacy stages quick.
SIM_CURATE = {"rate_hz": 5.0}


@pytest.fixture(scope="session")
def sim_fleet(tmp_path_factory) -> Path:
    """A simulated fleet covering every event type and time of day: 3 vehicles x 2 drives x 2 cameras x 30 s."""
    from fleetcore.simulate import simulate_fleet

    root = tmp_path_factory.mktemp("fleet") / "landing"
    simulate_fleet(root, vehicles=3, drives_per_vehicle=2, cameras=2, width=320, height=180, fps=10.0, duration_s=30.0, seed=7)
    return root


@pytest.fixture(scope="session")
def sim_store(sim_fleet, tmp_path_factory):
    """The curate job's store of ``sim_fleet`` (labels and privacy on, the defaults): (path, run summary)."""
    from fleetcore.clips import CurateConfig
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    out = tmp_path_factory.mktemp("store") / "store"
    cfg = CurateConfig(**SIM_CURATE)
    summary = run_curate(str(sim_fleet), str(out), cfg, beam_args=[f"--runner={DEFAULT_RUNNER}"])
    return out, summary


@pytest.fixture(scope="session")
def plain_store(tmp_path_factory):
    """A 2 vehicles x 2 drives fleet curated without the labels and privacy stages (fast): (landing, store)."""
    from fleetcore.clips import CurateConfig
    from fleetcore.simulate import simulate_fleet
    from pipelines.curate import DEFAULT_RUNNER, run_curate

    tmp = tmp_path_factory.mktemp("plain")
    landing, store = tmp / "landing", tmp / "store"
    simulate_fleet(landing, vehicles=2, drives_per_vehicle=2, cameras=2, width=320, height=180, fps=10.0, duration_s=30.0, seed=7, workers=1)
    run_curate(str(landing), str(store), CurateConfig(stages=()), beam_args=[f"--runner={DEFAULT_RUNNER}"])
    return landing, store


def add_store_labels(store, rows, *, replace: bool = False) -> None:
    """Put LABELS rows into a store as a labeller would: into the listed ``labels`` file of each current
    generation holding the rows' clips (added to the rows there, or instead of them with ``replace``:
    then every generation's labels are replaced), and commit those generations. Their wide
    ``clip_labels`` no longer matches, so it leaves the manifest and readers pivot the labels."""
    from dataclasses import replace as with_fields

    from fleetcore.store.catalog import Catalog
    from fleetcore.store.fs import read_parquet, write_parquet
    from fleetcore.store.layout import StoreLayout, generation_id
    from fleetcore.store.manifest import commit
    from schemas import LABELS

    cat = Catalog(str(store))
    layout = cat.layout
    drive_of = {c: StoreLayout.drive_name(v, d) for c, v, d in cat.read("clips").select("clip_id", "vehicle_id", "drive_id").iter_rows()}
    new: dict[str, list[dict]] = {}
    for r in rows:
        new.setdefault(drive_of[r["clip_id"]], []).append(r)
    gens = []
    for g in cat.generations():
        rel = g.table("labels")
        if g.drive not in new and (rel is None or not replace):
            continue
        old = [] if rel is None or replace else read_parquet(layout.resolve(rel), columns=LABELS.column_names).to_pylist()
        rel = rel or layout.table_relpath("labels", g.date, g.drive, generation_id(g.config_version))
        write_parquet(LABELS.validate(LABELS.from_pylist(old + new.get(g.drive, []))), layout.resolve(rel))
        tables = {t: p for t, p in g.tables if t != "clip_labels"} | {"labels": rel}
        gens.append(with_fields(g, tables=tuple(sorted(tables.items()))))
    commit(layout, add=gens)


@pytest.fixture(scope="session")
def store_labels():
    """:func:`add_store_labels`, for tests that add labels to a curated store."""
    return add_store_labels


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_empty_moto(endpoint: str) -> None:
    """Reset a moto server's state: moto keeps its buckets process-wide, across servers."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()


# --------------------------------------------------------------------------------------
# a counting reverse proxy in front of moto: every request and byte fetched, as seen at the wire
# --------------------------------------------------------------------------------------
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect", "content-length"}


@dataclass(frozen=True)
class Fetch:
    """One request the proxy forwarded: method, object key (bucket/key), Range header, body bytes returned."""

    method: str
    key: str
    range: str | None
    nbytes: int
    status: int


def _read_chunked(f) -> bytes:
    out = bytearray()
    while True:
        size = int(f.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while f.readline() not in (b"\r\n", b"\n", b""):
                continue
            return bytes(out)
        out += f.read(size)
        f.readline()


def _handler(upstream: int, fetches: list[Fetch], lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
            log.debug("proxy: " + format, *args)

        def forward(self) -> None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = _read_chunked(self.rfile)
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=120)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP:
                    self.send_header(k, v)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
            self.send_header("Content-Length", length or "0")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            with lock:
                fetches.append(Fetch(self.command, unquote(urlsplit(self.path).path).lstrip("/"), self.headers.get("Range"),
                                     len(data), resp.status))

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

    return Forward


class CountingProxy:
    """A threaded HTTP reverse proxy on 127.0.0.1 in front of ``upstream``, recording every request."""

    def __init__(self, upstream: int) -> None:
        self.fetches: list[Fetch] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream, self.fetches, self._lock))
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def mark(self) -> int:
        with self._lock:
            return len(self.fetches)

    def since(self, mark: int) -> list[Fetch]:
        with self._lock:
            return list(self.fetches[mark:])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
