"""Tools for developers: the demo, and helpers that tests, the demo and benchmarks share (not shipped)."""
