"""End to end against the real server: `dagster dev` (webserver + daemon) on 127.0.0.1 in a temporary
DAGSTER_HOME, a curate run launched through the GraphQL API on a simulated fleet, polled to SUCCESS,
then the asset graph page rendered by headless Chromium must show our assets.

Every process started here runs in its own process group and is stopped by group id in a finally.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
DATE = "2026-11-20"
ASSETS = ("landing_drives", "curated_drives", "trigger_events", "clip_store", "clip_catalog", "coverage_report")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gql(port: int, query: str, variables: dict | None = None, *, timeout: float = 30.0) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        doc = json.loads(r.read())
    if doc.get("errors"):
        raise AssertionError(f"GraphQL errors: {doc['errors']}")
    return doc["data"]


def _stop(proc: subprocess.Popen) -> None:
    """Stop the whole process group: SIGTERM, then SIGKILL if it does not exit."""
    if proc.poll() is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # children of an exited leader
        except ProcessLookupError:
            pass
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group (code server, daemon)
    except ProcessLookupError:
        pass


def _wait(what: str, fn, *, deadline_s: float, proc: subprocess.Popen, log: Path):
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"dagster dev exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-4000:]}")
        try:
            out = fn()
            if out:
                return out
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last = exc
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what} (last error: {last}):\n{log.read_text()[-4000:]}")


def _render(tmp_path: Path, port: int, route: str, procs: list) -> str:
    """The DOM of a UI page after headless Chromium has run its scripts (virtual time budget)."""
    profile = tmp_path / f"chromium-profile-{len(procs)}"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
           "--window-size=1600,1200", f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom",
           f"http://127.0.0.1:{port}/{route}"]
    browser = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(browser)
    dom, _ = browser.communicate(timeout=120)
    assert browser.returncode == 0, f"chromium exited {browser.returncode} on /{route}"
    return dom.decode("utf-8", "replace")


LOCATIONS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name
    locationOrLoadError { __typename ... on RepositoryLocation { repositories { name jobs { name } } } ... on PythonError { message } } } } } }
"""

LAUNCH = """
mutation Launch($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message stack }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on InvalidSubsetError { message } ... on PipelineNotFoundError { message } } }
"""

ADD_PARTITION = """mutation A($r: RepositorySelector!, $n: String!, $k: String!) {
  addDynamicPartition(repositorySelector: $r, partitionsDefName: $n, partitionKey: $k) { __typename
  ... on AddDynamicPartitionSuccess { partitionKey } ... on PythonError { message } ... on UnauthorizedError { message } } }"""

STATUS = """query S($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""

SET_CURSOR = """mutation C($s: SensorSelector!, $c: String) { setSensorCursor(sensorSelector: $s, cursor: $c) { __typename
  ... on PythonError { message } } }"""

START_SENSOR = """mutation S($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename
  ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""

RUNS_FOR_DATE = """query R($date: String!) { runsOrError(filter: {tags: [{key: "dagster/partition", value: $date}]}) {
  __typename ... on Runs { results { runId status tags { key value } } } } }"""

SENSOR_TICKS = """query T($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { __typename
  ... on Sensor { sensorState { ticks(limit: 5) { status timestamp } } } } }"""


def test_ui_launches_a_partition_run_and_shows_the_asset_graph(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) for the browser test")
    from dagster_project.home import write_home
    from fleetcore.simulate import simulate_fleet

    landing, store = tmp_path / "landing", tmp_path / "store"
    simulate_fleet(landing, vehicles=1, drives_per_vehicle=1, cameras=1, width=320, height=180, fps=10.0, duration_s=20.0, seed=3)
    home = tmp_path / "dagster_home"
    write_home(home, decode_limit=1, max_concurrent_runs=1)
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FLEET_LANDING_ROOT": str(landing),
        "FLEET_STORE_ROOT": str(store),
        "FLEET_DATASETS_ROOT": str(tmp_path / "datasets"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    dagster = Path(sys.executable).with_name("dagster")
    log = tmp_path / "dagster_dev.log"
    procs: list[subprocess.Popen] = []
    try:
        with open(log, "wb") as lf:
            procs.append(subprocess.Popen(
                [str(dagster), "dev", "-m", "dagster_project.definitions", "-h", "127.0.0.1", "-p", str(port)],
                cwd=REPO, env=env, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            ))
        dev = procs[0]

        def location():
            ws = _gql(port, LOCATIONS)["workspaceOrError"]
            for e in ws.get("locationEntries", []):
                loc = e["locationOrLoadError"]
                if loc and loc["__typename"] == "PythonError":
                    raise AssertionError(f"code location failed to load: {loc['message']}")
                if loc and loc["__typename"] == "RepositoryLocation":
                    repo = loc["repositories"][0]
                    if any(j["name"] == "curate_job" for j in repo["jobs"]):
                        return e["name"], repo["name"]
            return None

        loc_name, repo_name = _wait("the code location", location, deadline_s=180, proc=dev, log=log)
        params = {
            "selector": {"repositoryLocationName": loc_name, "repositoryName": repo_name, "jobName": "curate_job"},
            "runConfigData": {"ops": {"curate": {"config": {"labels": False, "privacy": False}}}},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DATE}]},
        }
        # the curate partitions are the drive dates present (dynamic): add the date as the landing sensor would
        added = _gql(port, ADD_PARTITION, {"r": {"repositoryLocationName": loc_name, "repositoryName": repo_name},
                                           "n": "drive_dates", "k": DATE})["addDynamicPartition"]
        assert added["__typename"] == "AddDynamicPartitionSuccess", added
        launched = _gql(port, LAUNCH, {"p": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        def finished():
            st = _gql(port, STATUS, {"id": run_id})["runOrError"]["status"]
            return st if st in ("SUCCESS", "FAILURE", "CANCELED") else None

        status = _wait(f"run {run_id}", finished, deadline_s=300, proc=dev, log=log)
        assert status == "SUCCESS", log.read_text()[-4000:]
        assert (store / "clips" / "manifest.json").is_file()

        # the asset graph pages, rendered by a real browser: the global lineage (groups, collapsed by
        # default) and the curate group's graph (asset nodes, with the upstream landing_drives)
        global_html = _render(tmp_path, port, "asset-groups", procs)
        assert "Global asset lineage" in global_html
        for group in ("ingest", "curate", "datasets"):
            assert f">{group}<" in global_html or f"> {group}" in global_html, f"group {group} not on the lineage page"
        group_html = _render(tmp_path, port, f"locations/{repo_name}@{loc_name}/asset-groups/curate", procs)
        missing = [a for a in ASSETS if a not in group_html]
        assert not missing, f"the curate asset graph lacks {missing}:\n{group_html[:3000]}"

        # The landing sensor under the running daemon: its cursor holds the drive already curated; a new
        # drive dropped into the landing zone leads to exactly one run for its date, and its clips reach
        # the catalog.
        import polars as pl

        from dagster_project.landing_scan import key_digest, landed_drive, write_cursor
        from fleetcore.landing.drives import list_drives
        from fleetcore.simulate import simulate_drive

        sensor = {"repositoryLocationName": loc_name, "repositoryName": repo_name, "sensorName": "landing_sensor"}
        assert _gql(port, SET_CURSOR, {"s": sensor, "c": write_cursor({key_digest(r.key) for r in list_drives(landing)})})["setSensorCursor"]["__typename"] == "Sensor"
        assert _gql(port, START_SENSOR, {"s": sensor})["startSensor"]["__typename"] == "Sensor"
        ref = simulate_drive(landing, "veh-new", cameras=1, width=320, height=180, fps=10.0, duration_s=12.0, seed=5, start_date="2026-11-23")
        new_date = landed_drive(ref).date

        def runs_for_new_date():
            return _gql(port, RUNS_FOR_DATE, {"date": new_date})["runsOrError"]["results"]

        def sensor_run_done():
            runs = runs_for_new_date()
            return runs if runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs) else None

        runs = _wait(f"a sensor run for {new_date}", sensor_run_done, deadline_s=300, proc=dev, log=log)
        assert len(runs) == 1 and runs[0]["status"] == "SUCCESS", (runs, log.read_text()[-4000:])
        assert {"key": "fleet/trigger", "value": "landing_sensor"} in runs[0]["tags"]
        # a later tick of the sensor requests nothing more for the same drive
        t_done = time.time()

        def later_tick():
            ticks = _gql(port, SENSOR_TICKS, {"s": sensor})["sensorOrError"]["sensorState"]["ticks"]
            return ticks if any(t["timestamp"] > t_done and t["status"] in ("SKIPPED", "SUCCESS") for t in ticks) else None

        _wait("a later sensor tick", later_tick, deadline_s=120, proc=dev, log=log)
        assert len(runs_for_new_date()) == 1
        clips = pl.read_parquet(store / "catalog" / "clips" / "**" / "*.parquet")
        assert clips.filter(pl.col("drive_id") == ref.drive_id).height >= 1
    finally:
        for p in reversed(procs):
            _stop(p)


TERMINATE = """mutation T($id: String!) { terminateRun(runId: $id) { __typename
  ... on TerminateRunFailure { message } ... on PythonError { message } } }"""

RUN_EVENTS = """query E($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status
  eventConnection { events { __typename } } } } }"""


def test_terminating_a_run_in_the_ui_stops_the_beam_job(tmp_path):
    """Terminate in the UI (GraphQL ``terminateRun``) while the curate job runs out of process: the run
    ends CANCELED, the job process (launched through Pipes) is gone and the step is not retried."""
    import psutil

    from dagster_project.home import write_home
    from fleetcore.simulate import simulate_fleet

    landing, store = tmp_path / "landing", tmp_path / "store"
    simulate_fleet(landing, vehicles=2, drives_per_vehicle=1, cameras=1, width=320, height=180, fps=10.0, duration_s=60.0, seed=11, workers=1)
    home = tmp_path / "dagster_home"
    write_home(home, decode_limit=1, max_concurrent_runs=1)
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "FLEET_LANDING_ROOT": str(landing), "FLEET_STORE_ROOT": str(store),
           "FLEET_DATASETS_ROOT": str(tmp_path / "datasets"), "DAGSTER_DISABLE_TELEMETRY": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log = tmp_path / "dagster_dev.log"
    procs: list[subprocess.Popen] = []
    job = None
    try:
        with open(log, "wb") as lf:
            procs.append(subprocess.Popen([str(Path(sys.executable).with_name("dagster")), "dev", "-m", "dagster_project.definitions",
                                           "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdout=lf, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
        dev = procs[0]

        def location():
            ws = _gql(port, LOCATIONS)["workspaceOrError"]
            for e in ws.get("locationEntries", []):
                loc = e["locationOrLoadError"]
                if loc and loc["__typename"] == "RepositoryLocation" and any(j["name"] == "curate_job" for j in loc["repositories"][0]["jobs"]):
                    return e["name"], loc["repositories"][0]["name"]
            return None

        loc_name, repo_name = _wait("the code location", location, deadline_s=180, proc=dev, log=log)
        added = _gql(port, ADD_PARTITION, {"r": {"repositoryLocationName": loc_name, "repositoryName": repo_name},
                                           "n": "drive_dates", "k": DATE})["addDynamicPartition"]
        assert added["__typename"] == "AddDynamicPartitionSuccess", added
        params = {
            "selector": {"repositoryLocationName": loc_name, "repositoryName": repo_name, "jobName": "curate_job"},
            "runConfigData": {"ops": {"curate": {"config": {"labels": True, "privacy": True, "rate_hz": 10.0}}}},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DATE}]},
        }
        launched = _gql(port, LAUNCH, {"p": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        def job_process():
            try:
                kids = psutil.Process(dev.pid).children(recursive=True)
            except psutil.Error:
                return None
            for k in kids:
                try:
                    if "pipelines.curate" in " ".join(k.cmdline()):
                        return k
                except psutil.Error:
                    continue
            # the job starts in its own session: look for it anywhere, by our landing zone
            for p in psutil.process_iter(["cmdline"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if "pipelines.curate" in cmd and str(landing) in cmd:
                    return p
            return None

        job = _wait("the curate job process", job_process, deadline_s=240, proc=dev, log=log)
        time.sleep(2.0)  # into the Beam run
        assert job.is_running(), "the job finished before it could be cancelled"
        res = _gql(port, TERMINATE, {"id": run_id})["terminateRun"]
        assert res["__typename"] == "TerminateRunSuccess", res

        def finished():
            st = _gql(port, STATUS, {"id": run_id})["runOrError"]["status"]
            return st if st in ("SUCCESS", "FAILURE", "CANCELED") else None

        status = _wait(f"run {run_id} to stop", finished, deadline_s=120, proc=dev, log=log)
        assert status == "CANCELED", log.read_text()[-4000:]
        gone, alive = psutil.wait_procs([job], timeout=30)
        assert not alive, f"the curate job {job.pid} outlived the cancelled run"
        events = [e["__typename"] for e in _gql(port, RUN_EVENTS, {"id": run_id})["runOrError"]["eventConnection"]["events"]]
        assert "ExecutionStepUpForRetryEvent" not in events and "ExecutionStepRestartEvent" not in events, events
        assert not (store / "clips" / "manifest.json").exists()
    finally:
        if job is not None and job.is_running():
            os.killpg(job.pid, signal.SIGKILL)
        for p in reversed(procs):
            _stop(p)
