"""Dagster control plane: assets, partitions, sensors, schedules, checks and resources."""
