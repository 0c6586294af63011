"""Whole scenarios on the real services, shared by a test (small, with assertions) and a
benchmark (any size, with figures): one code path, so the benchmark measures what the test proves."""
