"""Dagster launches the Beam jobs through Pipes (dagster_project.beam_pipes, pipelines.pipes): the Dagster
process never imports Apache Beam, the job's counters and checks come back as metadata per partition,
a domain error is not retried, and cancelling the run stops the job's processes.

Each materialisation runs in a fresh Python process (a small driver script), so ``sys.modules`` of the
Dagster process is not polluted by other tests that import the pipelines.
"""


import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from dagster_project.beam_pipes import BeamPipesClient

REPO = Path(__file__).resolve().parents[1]
DATE = "2026-11-20"

DRIVER = r'''
import json, sys
import dagster as dg
from dagster_project import assets as A
from dagster_project.beam_pipes import BeamPipesClient
from dagster_project.checks import CHECKS
from dagster_project.partitions import drive_date_partitions
from dagster_project.resources import BeamRunner, FleetPaths, QualityThresholds

landing, store, out, labels, privacy = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5] == "1"
rate = float(sys.argv[6]) if len(sys.argv) > 6 else 5.0
paths = FleetPaths(landing_root=landing, store_root=store, reports_root=out + ".reports")
instance = dg.DagsterInstance.ephemeral()
instance.add_dynamic_partitions("drive_dates", ["%s"])  # what the landing sensor does
res = dg.materialize(instance=instance, assets=[A.landing_drives, A.build_curate_assets(drive_date_partitions()), *CHECKS], partition_key="%s",
                     resources={"paths": paths, "beam": BeamRunner(), "limits": QualityThresholds(), "pipes": BeamPipesClient()},
                     selection=[A.CURATED, A.TRIGGERS, A.CLIP_STORE, A.CLIP_CATALOG], raise_on_error=False,
                     run_config=dg.RunConfig(ops={"curate": A.CurateRunConfig(labels=labels, privacy=privacy, rate_hz=rate)}))
doc = {
    "success": res.success,
    "beam_imported": "apache_beam" in sys.modules,
    "pipelines_imported": sorted(m for m in sys.modules if m == "pipelines" or m.startswith("pipelines.")),
    "materializations": [{"key": e.materialization.asset_key.to_user_string(), "partition": e.partition,
                          "metadata": {k: v.value for k, v in e.materialization.metadata.items() if not isinstance(v.value, (dict, list))}}
                         for e in res.get_asset_materialization_events()],
    "checks": {c.check_name: c.passed for c in res.get_asset_check_evaluations()},
    "failures": [e.event_specific_data.error.message for e in res.all_events if e.is_step_failure],
    "retries": sum(1 for e in res.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"),
}
open(out, "w").write(json.dumps(doc, default=str))
''' % (DATE, DATE)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _driver(tmp_path: Path) -> Path:
    p = tmp_path / "driver.py"
    p.write_text(DRIVER)
    return p


def _materialise(tmp_path: Path, landing: Path, store: Path, *, labels=False, privacy=False, rate=5.0, name="out") -> dict:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, str(_driver(tmp_path)), str(landing), str(store), str(out), str(int(labels)), str(int(privacy)), str(rate)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def tiny_fleet(tmp_path_factory) -> Path:
    from fleetcore.simulate import simulate_fleet

    root = tmp_path_factory.mktemp("pipes") / "landing"
    simulate_fleet(root, vehicles=2, drives_per_vehicle=1, cameras=1, width=160, height=96, fps=10.0, duration_s=10.0, seed=7, workers=1)
    return root


def test_curate_config_and_command_line_agree(tmp_path):
    """The Launchpad's options and the job's command line make the same CurateConfig (same version)."""
    from dagster_project import assets as A
    from dagster_project.beam_pipes import curate_args
    from fleetcore.triggers.library import TRIGGERS_DIR
    from pipelines.curate import build_parser, config_from_args

    trig = tmp_path / "triggers"
    trig.mkdir()
    (trig / "extra.yaml").write_text((TRIGGERS_DIR / "hard_brake.yaml").read_text().replace("name: hard_brake", "name: extra_copy", 1))
    priv = tmp_path / "privacy.yaml"
    priv.write_text("detect_every: 3\n")
    for cfg in (A.CurateRunConfig(), A.CurateRunConfig(labels=False, privacy=False, rate_hz=2.5, max_side=320),
                A.CurateRunConfig(extra_triggers=[str(trig)], privacy_config=str(priv))):
        args, rest = build_parser().parse_known_args(curate_args("/l", "/s", DATE, cfg))
        assert rest == [] and args.date == [DATE]
        assert config_from_args(args) == cfg.to_curate_config()
        assert config_from_args(args).version() == cfg.to_curate_config().version()


def test_job_reported_check_names_match_the_declared_checks():
    from dagster_project import assets as A
    from pipelines import pipes

    assert (A.RUN_QUARANTINE_CHECK, A.DATASET_VERIFIED_CHECK) == (pipes.RUN_QUARANTINE_CHECK, pipes.DATASET_VERIFIED_CHECK)


def test_pipes_session_only_when_launched_by_pipes(monkeypatch):
    from pipelines.pipes import launched_by_pipes, pipes_session

    assert not launched_by_pipes({})
    assert not launched_by_pipes({"DAGSTER_PIPES_CONTEXT": "x"})
    assert launched_by_pipes({"DAGSTER_PIPES_CONTEXT": "x", "DAGSTER_PIPES_MESSAGES": "y"})
    monkeypatch.delenv("DAGSTER_PIPES_CONTEXT", raising=False)
    with pipes_session() as pipes:
        assert pipes is None


def test_dagster_modules_do_not_import_pipelines_or_beam():
    code = ("import sys, dagster_project.definitions, dagster_project.beam_pipes; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('apache_beam', 'pipelines')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_curate_asset_runs_the_job_out_of_process(tiny_fleet, tmp_path):
    store = tmp_path / "store"
    doc = _materialise(tmp_path, tiny_fleet, store)
    assert doc["success"], doc["failures"]
    assert doc["beam_imported"] is False and doc["pipelines_imported"] == []  # the Dagster process never imported Beam
    mats = {m["key"]: m for m in doc["materializations"]}
    assert set(mats) == {"curated_drives", "trigger_events", "clip_store", "clip_catalog"}
    for m in mats.values():
        md = m["metadata"]
        assert m["partition"] == DATE
        # the job's Beam counters and run numbers, reported over Pipes, beside the store's facts
        assert md["beam/drives_validated"] == 2 and md["beam/drives_curated"] == 2 and md["beam/frames_decoded"] > 0
        assert md["run/drives_curated"] == 2 and md["run/runner"] == "FnApiRunner" and md["run/quarantined"] == 0
        assert md["beam/clips_extracted"] == md["run/clips"] > 0
    assert mats["clip_store"]["metadata"]["clips"] == mats["clip_store"]["metadata"]["run/clips"]
    assert doc["checks"]["quarantine_this_run"] is True  # reported by the job itself
    assert doc["checks"]["shard_checksums"] is True
    assert (store / "clips" / "manifest.json").is_file()
    # a rerun of the same partition: the job skips the curated drives; counters say so
    again = _materialise(tmp_path, tiny_fleet, store, name="again")
    md = {m["key"]: m for m in again["materializations"]}["curated_drives"]["metadata"]
    assert again["success"] and md["run/drives_curated"] == 0 and md["beam/drives_skipped"] == 2


@pytest.mark.parametrize("code, retried", [(3, False), (2, False), (1, True)])
def test_exit_status_decides_the_retry(code, retried):
    """Exit 3 (a FleetError in the job, pipelines.pipes.EXIT_DOMAIN) and 2 (bad arguments) fail the step
    without a retry; any other failure (a lost worker, I/O) is retried by the step's RetryPolicy."""
    @dg.op(retry_policy=dg.RetryPolicy(max_retries=1, delay=0))
    def fails(context: dg.OpExecutionContext, pipes: BeamPipesClient):
        pipes.run(context=context, command=[sys.executable, "-c", f"raise SystemExit({code})"])

    @dg.job(resource_defs={"pipes": BeamPipesClient()})
    def j():
        fails()

    res = j.execute_in_process(raise_on_error=False)
    assert not res.success
    retries = [e for e in res.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert bool(retries) == retried
    failure = [e for e in res.all_events if e.is_step_failure][-1].step_failure_data
    assert f"status {code}" in (failure.user_failure_data.description if failure.user_failure_data else failure.error.message)


def _children(pid: int, needle: str) -> list:
    import psutil

    try:
        return [c for c in psutil.Process(pid).children(recursive=True) if needle in " ".join(c.cmdline())]
    except psutil.Error:
        return []


@pytest.fixture(scope="module")
def long_fleet(tmp_path_factory) -> Path:
    """Two 60 s drives at 320x180: its curate job (labels, privacy, 10 Hz) runs long enough to cancel."""
    from fleetcore.simulate import simulate_fleet

    root = tmp_path_factory.mktemp("pipes-long") / "landing"
    simulate_fleet(root, vehicles=2, drives_per_vehicle=1, cameras=1, width=320, height=180, fps=10.0, duration_s=60.0, seed=11, workers=1)
    return root


@pytest.mark.slow
def test_cancelling_the_run_stops_the_job(long_fleet, tmp_path):
    """SIGINT to the Dagster process (how a run is cancelled) while the curate job runs: the step is
    interrupted, the client forwards SIGINT to the job's process group, the job is gone, nothing is
    committed, and the step fails without a retry."""
    import psutil

    out, log = tmp_path / "cancel.json", tmp_path / "cancel.log"
    with open(log, "wb") as err:
        # labels + privacy at 10 Hz
        driver = subprocess.Popen([sys.executable, str(_driver(tmp_path)), str(long_fleet), str(tmp_path / "store"), str(out), "1", "1", "10.0"],
                                  cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    job = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None:
            if "successfully opened dagster pipes" in log.read_text(errors="replace"):  # the job is past its imports
                found = _children(driver.pid, "pipelines.curate")
                job = found[0] if found else None
                break
            time.sleep(0.05)
        assert job is not None and job.is_running(), "the curate job never started, or finished before it could be cancelled:\n" + log.read_text()[-3000:]
        pgid = os.getpgid(job.pid)
        assert pgid == job.pid != os.getpgid(driver.pid)  # its own process group
        time.sleep(0.5)  # into the Beam run
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=90)
        gone, alive = psutil.wait_procs([job], timeout=30)
        assert not alive, f"job {job.pid} still running after the run was cancelled"
        left = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == pgid]
        assert left == [], f"processes of the job's group left: {left}"
        doc = json.loads(out.read_text())
        assert not doc["success"] and doc["retries"] == 0, doc
        assert "cancelled" in doc["failures"][-1], doc["failures"]
        assert not (tmp_path / "store" / "clips" / "manifest.json").exists()  # nothing committed
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        if job is not None and job.is_running():
            os.killpg(job.pid, signal.SIGKILL)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
