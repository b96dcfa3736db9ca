"""Dagster Pipes for the Beam jobs: the assets launch ``python -m pipelines.curate ...`` and
``python -m pipelines.build_dataset ...`` as their own processes, so the Dagster run process never imports
Apache Beam, and cancelling the run stops the job.

``BeamPipesClient`` is ``dagster.PipesSubprocessClient`` (the Pipes context and messages travel through
temporary files named in the child's environment) that starts the job in its own process group and, when
the step is interrupted (run cancelled in the UI, SIGINT / SIGTERM to the run worker), forwards SIGINT to
the group, waits ``termination_timeout_seconds``, then SIGKILLs whatever of the group is left (Beam's
worker processes included), and fails the step without a retry (Dagster's RetryPolicy would otherwise
retry an interrupted step). The job side is ``pipelines.pipes``: logs, the run summary (a custom
message), per-asset materialisation metadata (run numbers ``run/...``, Beam counters ``beam/...``) and
asset-check results.

The child runs this project's code: ``PYTHONPATH`` starts with the project root, and the interpreter is
``BeamRunner.python`` (default: the Dagster process's own).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

import dagster as dg

from dagster_project.resources import PROJECT_ROOT, BeamRunner

#: Exit statuses of the jobs that mean "do not retry" (argparse errors: 2; pipelines.pipes.EXIT_DOMAIN: 3).
PERMANENT_EXIT = (2, 3)


class BeamJobFailed(dg.Failure):
    """The job process exited non-zero; ``returncode`` says how (2/3: a domain error, not retried)."""


class BeamPipesClient(dg.PipesSubprocessClient):
    """``PipesSubprocessClient`` that owns its job's process group (see the module docstring)."""

    def __init__(self, *, env: Mapping[str, str] | None = None, cwd: str | None = None, termination_timeout_seconds: float = 10,
                 **kw: Any):
        super().__init__(env=env, cwd=cwd, termination_timeout_seconds=termination_timeout_seconds, **kw)

    def run(self, *, context: dg.OpExecutionContext | dg.AssetExecutionContext, extras: Mapping[str, Any] | None = None,  # type: ignore[override]
            command: str | Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> dg.PipesClientCompletedInvocation:
        with dg.open_pipes_session(context=context, context_injector=self.context_injector, message_reader=self.message_reader,
                                   extras=dict(extras or {})) as session:
            proc = subprocess.Popen(
                command,
                cwd=cwd or self.cwd,
                env={**os.environ, **self.env, **(env or {}), **session.get_bootstrap_env_vars()},
                stdout=None if self.forward_stdio else subprocess.DEVNULL,
                stderr=None if self.forward_stdio else subprocess.DEVNULL,
                start_new_session=True,  # one group: the job and the runner's worker processes
            )
            context.log.info("[pipes] started %s (pid %d)", _short(command), proc.pid)
            try:
                proc.wait()
            except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as exc:  # the run was cancelled
                context.log.info("[pipes] step interrupted: stopping the job (pid %d)", proc.pid)
                stop_process_group(proc, self.termination_timeout_seconds)
                # Not re-raised: Dagster's RetryPolicy retries interrupted steps, and a cancelled job must not rerun.
                raise BeamJobFailed(description=f"{_short(command)} cancelled: the run was interrupted; the job (pid {proc.pid}) "
                                    f"was stopped (exit status {proc.returncode})", allow_retries=False,
                                    metadata={"returncode": proc.returncode, "pid": proc.pid}) from exc
            except BaseException:
                stop_process_group(proc, self.termination_timeout_seconds)  # never leave the job behind
                raise
            if proc.returncode != 0:
                permanent = proc.returncode in PERMANENT_EXIT
                raise BeamJobFailed(
                    description=f"{_short(command)} exited with status {proc.returncode}"
                    + (" (a domain error: not retried; see the job's log lines above)" if permanent else ""),
                    allow_retries=not permanent,
                    metadata={"returncode": proc.returncode, "pid": proc.pid},
                )
        return dg.PipesClientCompletedInvocation(session)


def stop_process_group(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGINT to the job's process group, then SIGKILL to the group after ``timeout_s``."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader if it did not stop, and any worker it left behind
    except ProcessLookupError:
        pass
    proc.wait()


def _short(command: str | Sequence[str]) -> str:
    parts = command.split() if isinstance(command, str) else list(command)
    return parts[2] if len(parts) > 2 and parts[1] == "-m" else " ".join(parts[:2])


def job_env() -> dict[str, str]:
    """``PYTHONPATH`` with the project root first (read when the step runs)."""
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), *([old] if old else [])])}


def job_command(beam: BeamRunner, module: str, args: Sequence[str]) -> list[str]:
    return [beam.python or sys.executable, "-m", module, *args, *beam.beam_args()]


def curate_args(landing: str, store: str, date: str, config: Any) -> list[str]:
    """The ``pipelines.curate`` command line of a ``CurateRunConfig`` for one date (the same options
    ``fleet curate`` takes; ``pipelines.curate.config_from_args`` turns them into the same CurateConfig)."""
    args = ["--input", landing, "--output", store, "--date", date, f"--rate-hz={config.rate_hz!r}", f"--max-side={config.max_side}",
            "--labels" if config.labels else "--no-labels", "--privacy" if config.privacy else "--no-privacy"]
    for t in config.extra_triggers:
        args += ["--triggers", t]
    for s in config.extra_stages:
        args += ["--stage", s]
    if config.privacy_config:
        args += ["--privacy-config", config.privacy_config]
    if config.labels_config:
        args += ["--labels-config", config.labels_config]
    return args


def run_job(context: Any, pipes: BeamPipesClient, beam: BeamRunner, module: str, args: Sequence[str]) -> tuple[dg.PipesClientCompletedInvocation, dict[str, Any]]:
    """Launch one job through Pipes; returns the invocation and the job's last custom message (its
    summary / result). A job that reported no summary is a failure."""
    inv = pipes.run(context=context, command=job_command(beam, module, args), env=job_env())
    messages = [m for m in inv.get_custom_messages() if isinstance(m, dict)]
    if not messages:
        raise dg.Failure(description=f"{module}: the job exited 0 without reporting its summary through Pipes")
    return inv, messages[-1]


def merged_results(inv: dg.PipesClientCompletedInvocation, extra: Mapping[dg.AssetKey, Mapping[str, Any]]) -> list[Any]:
    """The job's reported materialisations with ``extra`` metadata (by asset key) added, in the order of
    ``extra``'s keys (a multi-asset yields in topological order), then its check results."""
    order = {k: i for i, k in enumerate(extra)}
    mats, other = [], []
    for r in inv.get_results():
        if isinstance(r, dg.MaterializeResult) and r.asset_key is not None:
            mats.append(dg.MaterializeResult(asset_key=r.asset_key, metadata={**(r.metadata or {}), **extra.get(r.asset_key, {})},
                                             data_version=r.data_version))
        else:
            other.append(r)
    return sorted(mats, key=lambda m: order.get(m.asset_key, len(order))) + other
