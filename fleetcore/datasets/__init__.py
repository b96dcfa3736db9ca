"""Training datasets: specs, selection over the catalog, building, manifests, diff and verify.

See ``docs/datasets.md``. The Beam job is ``pipelines/build_dataset.py``; the loader is
``fleetcore/datasets/loader.py``.
"""

from fleetcore.datasets.spec import DatasetSpec, load_spec, parse_spec

__all__ = ["DatasetSpec", "load_spec", "parse_spec"]
