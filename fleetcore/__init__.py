"""Fleet Curator domain logic: video, telemetry, triggers, clips, labels, privacy, shards, catalog.

Pure Python over pyarrow/polars/OpenCV/PyAV; never imports dagster or apache_beam.
"""

__version__ = "0.1.0"
