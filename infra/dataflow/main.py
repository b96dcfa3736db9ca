"""Dataflow Flex Template entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE`` of the image's ``dataflow``
target): the template launcher runs this file with the template's parameters as ``--name=value``
options and the job's Beam options; it is ``python -m pipelines.curate`` under another name."""

from pipelines.curate import main

if __name__ == "__main__":
    raise SystemExit(main())
