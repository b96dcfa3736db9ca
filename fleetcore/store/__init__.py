"""The clip store: the one package that knows its layout (``layout``), its manifest revisions and
generations (``manifest``), its tables (``catalog``), its shards and samples (``shards``, ``tario``,
``sample``), storage on a local disk or object storage (``fs``), retention and erasure
(``retention``). See docs/store.md."""
