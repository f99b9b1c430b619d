"""bench/memory.py: each command runs in the work folder, and its figure is its own peak RSS."""
from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="module")
def mem():
    from conftest import load_bench_module

    return load_bench_module("memory")


def test_run_measured_runs_in_the_folder_and_reports_the_command_s_own_peak(mem, tmp_path):
    ballast = b"x" * 300_000_000  # this process bigger than the command: its high-water mark must not count
    res = mem.run_measured([sys.executable, "-c", "import os; print(os.getcwd()); raise SystemExit(4)"], tmp_path)
    assert res["rc"] == 4 and res["log_tail"] == [str(tmp_path)]
    assert 0 < res["peak_rss_mb"] < 200 and len(ballast)
