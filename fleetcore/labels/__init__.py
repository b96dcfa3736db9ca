"""Auto-labelling: labeller interface and registry, built-in labellers, the ``labels`` clip stage.

See docs/labels.md.
"""

from fleetcore.labels.base import (
    LABELLERS,
    LabelError,
    Labeller,
    LabelValue,
    Scored,
    jsonable,
    labels_to_rows,
    register_labeller,
)

__all__ = ["LABELLERS", "LabelError", "LabelValue", "Labeller", "Scored", "jsonable", "labels_to_rows", "register_labeller"]
