"""bench/phantom_to_real.py: its input checks and its table (the scoring itself runs the CLI on real CT)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ptr():
    from conftest import load_bench_module

    return load_bench_module("phantom_to_real")


def test_a_demo_folder_without_a_model_is_named(ptr, tmp_path):
    with pytest.raises(SystemExit, match=f"{tmp_path}/models/best.pt missing"):
        ptr.main(["--demo", str(tmp_path), "--report-dir", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_missing_real_cases_are_named(ptr, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "best.pt").write_bytes(b"")
    with pytest.raises(SystemExit, match="ircadb_1, ircadb_7, ircadb_17 not imported"):
        ptr.main(["--demo", str(tmp_path), "--cases", str(tmp_path / "none"), "--report-dir", str(tmp_path / "r")])


def test_render_one_row_per_model_and_case(ptr):
    rows = [{"demo": "bench/results/demo_variants/runs/seed7", "case": "ircadb_1", "liver_dice": 0.71666,
             "liver_assd_mm": 8.161, "liver_ml_pred": 1274.2, "liver_ml_gt": 1489.0,
             "tumour_ml_pred": 12.34, "tumour_ml_gt": 111.4},
            {"demo": "demo_run", "case": "ircadb_17", "liver_dice": 0.8, "liver_assd_mm": None,
             "liver_ml_pred": None, "liver_ml_gt": 1861.0}]
    text = ptr.render({"meta": {"command": "python bench/phantom_to_real.py", "machine": {}}, "rows": rows})
    assert "| seed7 | ircadb_1 | 0.717 | 8.16 | 1274 / 1489 | 12.3 / 111.4 |" in text
    assert "| demo_run | ircadb_17 | 0.800 | - | - / 1861 | - / - |" in text
