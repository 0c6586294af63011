"""Benchmarks of the companies flow: load speed against COPY, and Dagster CLI wall times.

``python -m benchmarks.load --rows 1000000`` and ``python -m benchmarks.orchestration``;
see ``benchmarks/README.md``. Nothing here is imported by the product code.
"""
