"""Runner plumbing shared by the jobs: the pinned default runner, options, and running to completion."""

from __future__ import annotations

import os
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

#: Beam's local Python runner, named explicitly: "DirectRunner" (and Beam's unnamed default) first try to
#: download a Prism runner binary, then fall back to this same engine. It honours
#: --direct_running_mode (in_memory | multi_threading | multi_processing) and --direct_num_workers.
DEFAULT_RUNNER = "FnApiRunner"


#: The local runner's names: when one of them runs the job and the arguments name no running mode, the
#: job runs on one worker thread per CPU (``multi_threading``): the decoders, encoders and detectors
#: release the GIL, so drives decode side by side. The bytes written do not depend on it.
LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner"}


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Standard PipelineOptions from command-line style arguments, with the runner pinned when unnamed
    and, on the local runner, one worker thread per CPU unless a running mode is named."""
    args = list(beam_args)
    opts = PipelineOptions(args)
    std = opts.view_as(StandardOptions)
    if not std.runner:
        std.runner = DEFAULT_RUNNER
    named = any(a.split("=", 1)[0] in ("--direct_running_mode", "--direct_num_workers") for a in args)
    if str(std.runner).rsplit(".", 1)[-1] in LOCAL_RUNNERS - {"BundleBasedDirectRunner"} and not named:
        direct = opts.view_as(DirectOptions)
        direct.direct_running_mode = "multi_threading"
        direct.direct_num_workers = max(1, os.cpu_count() or 1)
    return opts


class _HeldWorkerTracebacks:
    """sys.stderr while a job runs: Beam's in-process SDK worker prints a failing bundle's traceback
    straight to stderr (besides raising it to the caller, whose exception carries the same text).
    Those writes are held back; everything else passes through."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.held: list[str] = []
        self._after_held = False

    def write(self, text: str) -> int:
        if text.startswith("Traceback (most recent call last):") and "apache_beam" in text:
            self.held.append(text)
            self._after_held = True
            return len(text)
        if self._after_held and text == "\n":  # print()'s own line end after the held text
            self._after_held = False
            return len(text)
        self._after_held = False
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def run_to_completion(p: beam.Pipeline) -> Any:
    """Run a pipeline, wait for it, and close the distributed client the DaskRunner opens.

    A job that fails raises (Beam's exception names the failing step and carries the worker's
    traceback). The worker tracebacks Beam also prints to stderr are held back while the job runs,
    and written out after a failure, except one the caller turns into a one-line error (a full
    disk: ``fleetcore.store.cleanup.no_space``)."""
    import sys

    from fleetcore.store.cleanup import no_space

    hold = _HeldWorkerTracebacks(sys.stderr)
    sys.stderr = hold
    try:
        result = p.run()
        try:
            result.wait_until_finish()
        finally:
            client = getattr(result, "client", None)
            if client is not None:
                client.close()
    except Exception as exc:
        if no_space(exc) is None:
            for text in hold.held:
                hold.stream.write(text + "\n")
        raise
    finally:
        if sys.stderr is hold:
            sys.stderr = hold.stream
    return result


def beam_counters(result: Any, namespace: str) -> dict[str, int] | None:
    """The job's Beam counters of ``namespace`` by name, or None on runners without metrics (the
    DaskRunner's ``metrics()`` raises NotImplementedError)."""
    try:
        res = result.metrics().query()
    except NotImplementedError:
        return None
    return {c.key.metric.name: int(c.committed or c.attempted or 0) for c in sorted(res["counters"], key=lambda c: c.key.metric.name)
            if c.key.metric.namespace == namespace}
