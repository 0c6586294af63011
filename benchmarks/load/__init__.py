"""Load speed of the companies flow against PostgreSQL COPY, on one generated file (issue 5).

``python -m benchmarks.load --rows 1000000`` generates (or reuses, cached under /tmp) a
companies file in the SPEC.md format, then measures on that file and the same server:

- COPY: ``psql \\copy`` into an unindexed text table, the reference;
- the keyed floor: binary COPY of the load step's rows into an empty ``accounts``, indexes after;
- the load step: ``load_stage`` on the transform output, first load, re-load, daily delta;
- the whole flow: extract -> transform -> load -> link for one partition, the same three;
- dlt's ``merge`` of the same rows (when dlt is installed), first load and daily delta;
- executemany: SQLAlchemy Core ``executemany`` of 100k rows into a keyed text table.

Every path runs in its own child process and database, so its time and peak RSS (the
child's own VmHWM) are its own. It prints a table and, last, ``load_vs_copy=.. flow_vs_copy=..
delta_flow_vs_copy=.. identical_flow_vs_copy=.. load_vs_floor=.. dlt_vs_copy=.. peak_rss_mb_1m=..
peak_rss_mb_10m=..``. The child side is ``--only <path>``.
"""
