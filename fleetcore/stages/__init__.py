"""Clip stages: the registry that runs them between extraction and encoding (``registry``), their typed options (``options``) and the privacy stage (``privacy``)."""
