"""Runner plumbing shared by the jobs: the pinned default runner, options, and running to completion."""

from __future__ import annotations

from typing import Any, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

#: Beam's local Python runner, named explicitly: "DirectRunner" (and Beam's unnamed default) first try to
#: download a Prism runner binary, then fall back to this same engine. It honours
#: --direct_running_mode (in_memory | multi_threading | multi_processing) and --direct_num_workers.
DEFAULT_RUNNER = "FnApiRunner"


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Standard PipelineOptions from command-line style arguments, with the runner pinned when unnamed."""
    opts = PipelineOptions(list(beam_args))
    std = opts.view_as(StandardOptions)
    if not std.runner:
        std.runner = DEFAULT_RUNNER
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
