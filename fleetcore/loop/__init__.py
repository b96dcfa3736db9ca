"""The data-engine loop (docs/loop.md): similarity search over clips, model predictions in, and
disagreement triggers out.

* :mod:`fleetcore.loop.embeddings` — clip embeddings: the built-in telemetry-shape embedding and
  image embeddings from a user's ONNX model, per camera and time window;
* :mod:`fleetcore.loop.index` — the LanceDB vector index beside the catalog (``<store>/vectors/``)
  and ``--like`` searches filtered by a mining query;
* :mod:`fleetcore.loop.predictions` — ``fleet predictions import``: model outputs joined to clips
  into the store's ``predictions`` table;
* :mod:`fleetcore.loop.disagreement` — disagreement metrics as trigger definitions, their
  evaluation against known events, campaign files for vehicle-side loggers, and the dataset of the
  clips they select.

The top wing of fleetcore: it reads through the query layer and the store, nothing below imports it.
"""

from __future__ import annotations

from fleetcore.errors import FleetError


class LoopError(FleetError):
    """A loop operation (index, search, predictions import, disagreement trigger) failed: names what and why."""
