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


def run_to_completion(p: beam.Pipeline) -> Any:
    """Run a pipeline, wait for it, and close the distributed client the DaskRunner opens."""
    result = p.run()
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)
        if client is not None:
            client.close()
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
