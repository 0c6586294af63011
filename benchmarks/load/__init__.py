"""Load speed of the companies flow against PostgreSQL COPY, on one generated file (issue 5).

``python -m benchmarks.load --rows 1000000`` generates (or reuses, cached under /tmp) a
companies file in the SPEC.md format, then measures on that file and the same server:

- COPY: ``psql \\copy`` into an unindexed text table, the physical limit here;
- the load step: ``load_stage`` on the transform output, first load and re-load;
- the whole flow: extract -> transform -> load -> link for one partition, both loads;
- dlt's ``merge`` of the same rows (when dlt is installed), first load and re-load;
- the floor: SQLAlchemy Core ``executemany`` of 100k rows into a keyed text table.

Every path runs in its own child process and database, so its time and peak RSS (the
child's own VmHWM) are its own. It prints a table and, last, ``load_vs_copy=.. flow_vs_copy=.. dlt_vs_copy=..
peak_rss_mb_1m=.. peak_rss_mb_10m=..``. The child side is ``--only <path>``.
"""
