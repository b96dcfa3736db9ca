"""The job side of Dagster Pipes: what a Beam job reports back when Dagster launched it.

``dagster_project.beam_pipes`` starts ``python -m pipelines.curate ...`` (or ``pipelines.build_dataset``)
as its own process through ``dagster.PipesSubprocessClient``, which puts the Pipes bootstrap parameters
in the child's environment (``DAGSTER_PIPES_CONTEXT`` / ``DAGSTER_PIPES_MESSAGES``). Only then does a job
open a Pipes session (``dagster_pipes.open_dagster_pipes()``); run by hand, from ``fleet curate`` or on a
cluster, the jobs never touch Pipes. ``dagster_pipes`` is a small dependency-free package; the jobs never
import ``dagster`` itself.

In a session the job streams its log records (``pipelines`` / ``fleetcore`` at INFO, anything at
WARNING and above) to the Dagster run, and at the end reports its run summary (a custom message),
one materialisation per asset in scope (the run summary's numbers and the Beam counters as metadata)
and its asset checks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any, Iterator, Mapping

log = logging.getLogger(__name__)

#: The environment variables dagster's PipesSubprocessClient sets (dagster_pipes.DAGSTER_PIPES_*_ENV_VAR).
PIPES_ENV = ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES")

#: Exit status of a job that stopped on a domain error (``FleetError``: a bad option, a bad spec); the
#: Dagster side fails the run without retrying. Argument errors exit 2 (argparse), also not retried.
EXIT_DOMAIN = 3
#: Exit status of a job stopped by SIGINT / SIGTERM (Dagster cancelled the run).
EXIT_CANCELLED = 130

#: Loggers forwarded at INFO; others only from WARNING (Beam's own INFO lines are many).
FORWARDED = ("pipelines", "fleetcore")


def launched_by_pipes(environ: Mapping[str, str] | None = None) -> bool:
    """True when this process was started by a Dagster Pipes client (its bootstrap variables are set)."""
    env = os.environ if environ is None else environ
    return all(env.get(k) for k in PIPES_ENV)


class _ForwardToPipes(logging.Handler):
    """Sends log records to the Dagster run through the Pipes context's logger (the Pipes logger does
    not propagate to the root logger, so nothing loops). ``Handler.handle`` holds the handler's
    re-entrant lock around ``emit``: the runner's worker threads append to the message file one at a time."""

    def __init__(self, pipes: Any):
        super().__init__(level=logging.INFO)
        self.pipes = pipes

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in FORWARDED

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.pipes.log.log(record.levelno, self.format(record))
        except Exception:  # noqa: BLE001 - a log line must never fail the job
            self.handleError(record)


@contextlib.contextmanager
def pipes_session() -> Iterator[Any | None]:
    """The Pipes context when Dagster launched this process (logs forwarded while it is open), else None."""
    if not launched_by_pipes():
        yield None
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        handler = _ForwardToPipes(pipes)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        previous = {s: signal.signal(s, _stop_now(pipes)) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield pipes
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            root.removeHandler(handler)


def _stop_now(pipes: Any):
    """Dagster cancelled the run (PipesSubprocessClient forwards SIGINT): close the session and exit at
    once. Waiting for the runner's worker threads would finish the whole job first (the job commits
    the store's manifest only in its last step)."""

    def handler(signum: int, _frame: Any) -> None:
        log.warning("cancelled by the orchestrator (signal %d): stopping the job", signum)
        try:
            pipes.close()
        finally:
            os._exit(EXIT_CANCELLED)

    return handler


def asset_keys(pipes: Any) -> list[str]:
    """The asset keys in scope (empty for a plain op, e.g. the mining job)."""
    return list(pipes.asset_keys) if pipes.is_asset_step else []


def scalar_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers, strings and booleans of ``values`` (Pipes infers their metadata types)."""
    return {k: v for k, v in values.items() if isinstance(v, (bool, int, float, str))}


CURATE_SUMMARY_NUMBERS = ("drives_curated", "clips", "clips_reused", "clips_decoded", "frames_decoded", "shards_written",
                          "bytes_written", "store_revision", "store_samples", "store_shards", "seconds", "runner",
                          "config_version")

#: The check the curate job reports on each run (declared by the curate asset in dagster_project).
RUN_QUARANTINE_CHECK = "quarantine_this_run"
#: The check the dataset build reports (declared by each dataset asset).
DATASET_VERIFIED_CHECK = "dataset_verified"


def curate_run_metadata(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The run's metadata for each curate asset: the summary's numbers (``run/<name>``) and the Beam
    counters (``beam/<counter>``; ``beam_metrics: unavailable`` on runners without metrics, e.g. Dask)."""
    md = {f"run/{k}": v for k, v in scalar_metadata({k: summary.get(k) for k in CURATE_SUMMARY_NUMBERS}).items()}
    md["run/quarantined"] = len(summary.get("quarantined") or ())
    md.update(counter_metadata(summary.get("metrics")))
    return md


def counter_metadata(counters: Mapping[str, int] | None) -> dict[str, Any]:
    if counters is None:
        return {"beam_metrics": "unavailable on this runner"}
    return {f"beam/{k}": int(v) for k, v in counters.items()}


def report_curate(pipes: Any, summary: Mapping[str, Any]) -> None:
    """Report a curate run: summary (custom message), one materialisation per asset in scope, and the
    ``quarantine_this_run`` check (WARN when the run quarantined drives or clips)."""
    pipes.report_custom_message({"kind": "curate_summary", "summary": dict(summary)})
    keys = asset_keys(pipes)
    if not keys:
        return
    md = curate_run_metadata(summary)
    for key in keys:
        pipes.report_asset_materialization(asset_key=key, metadata=md)
    quarantined = list(summary.get("quarantined") or ())
    drives = [q for q in quarantined if not q.get("clip_id")]
    clips = [q for q in quarantined if q.get("clip_id")]
    target = next((k for k in keys if k.endswith("curated_drives")), keys[0])
    pipes.report_asset_check(
        check_name=RUN_QUARANTINE_CHECK, asset_key=target, passed=not quarantined, severity="WARN",
        metadata={"drives_quarantined_this_run": len(drives), "clips_quarantined_this_run": len(clips),
                  "first_problem": (quarantined[0].get("code") or quarantined[0].get("reason") or str(quarantined[0]))[:200] if quarantined else ""},
    )


def report_dataset(pipes: Any, result: Mapping[str, Any], counters: Mapping[str, int] | None, problems: list[str]) -> None:
    """Report a dataset build: its BuildResult (custom message), the materialisation (Beam counters;
    the Dagster side adds the rest) and the ``dataset_verified`` check (ERROR: the manifest does not match the shards)."""
    pipes.report_custom_message({"kind": "dataset_result", "result": dict(result)})
    keys = asset_keys(pipes)
    if not keys:
        return
    pipes.report_asset_materialization(asset_key=keys[0], metadata=counter_metadata(counters))
    pipes.report_asset_check(check_name=DATASET_VERIFIED_CHECK, asset_key=keys[0], passed=not problems, severity="ERROR",
                             metadata={"problems": len(problems), "first_problem": problems[0][:200] if problems else ""})
