"""Apache Beam jobs: DoFns and composite PTransforms over fleetcore, plus job entry points."""
