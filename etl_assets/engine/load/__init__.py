"""The load stage: an idempotent upsert on the natural key (``upsert``), with PostgreSQL's
binary COPY as the fast path (``postgres``)."""
