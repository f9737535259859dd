"""Defaults the fetcher derives from its container."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetcher.config import available_cpus


@pytest.mark.parametrize(
    ("content", "cpus"),
    [("200000 100000\n", 2.0), ("50000 100000", 0.5), ("1000 100000", 0.1)],
)
def test_the_cpu_limit_comes_from_the_cgroup_quota(tmp_path: Path, content: str, cpus: float) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content)
    assert available_cpus(cpu_max) == cpus


def test_without_a_quota_the_machine_counts(tmp_path: Path) -> None:
    import os

    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path / "cpu.max") == float(os.cpu_count() or 1)
    assert available_cpus(tmp_path / "missing") == float(os.cpu_count() or 1)
