"""bench/quality_settings.py: the settings table read from run summaries (no training): the shipped row per
fold is the benchmark's run with the fewest --set values, a compared row is named by what it sets beyond
that, and the seeds' largest difference in one fold is the rule's threshold."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def qs():
    from conftest import load_bench_module

    return load_bench_module("quality_settings")


GROW2 = "fill_holes=True, min_tumour_mm3=0, tumour_grow=2, tumour_grow_beyond=2"  # the CT config's [infer]


def _run(folder, fold, score, seed=42, minutes=20.0, variant="", sets=None, valid="blocks", machine=None,
         precision="bf16-mixed"):
    name = f"b{'.' + variant if variant else ''}-{fold}-seed{seed}-{minutes:g}min"
    summary = {"run": name, "recipe": "b", "fold": fold, "seed": seed, "budget_minutes": minutes, "ok": True,
               "variant": variant or None, "variant_sets": sets or {}, "valid": valid, "machine": machine,
               "train": {"epochs": 30, "img_per_s": 7.5, "precision": precision},
               "selection": {"chosen_label": "none", "table": [{"label": "none", "score": score},
                                                               {"label": GROW2, "score": score - 0.01}]}}
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    (folder / "runs" / f"{name}.json").write_text(json.dumps(summary))


def test_settings_table_against_the_shipped_run_of_each_fold(qs, tmp_path):
    reports, settings = tmp_path / "q", tmp_path / "q" / "settings"
    for seed, scores in ((42, (1.80, 1.85, 1.84)), (43, (1.82, 1.83, 1.89))):
        _run(reports, "ircadb_1", scores[0], seed)
        _run(reports, "ircadb_7", scores[1], seed, variant="aug", sets={"model.generator": "True"})
        _run(reports, "ircadb_17", scores[2], seed)
    _run(reports, "ircadb_7", 1.0, minutes=5.0, variant="vlits", valid=["lits_117"])  # another validation
    _run(settings, "ircadb_1", 1.90, variant="lr1", sets={"model.learning_rate": "0.001"})
    _run(settings, "ircadb_17", 1.88, variant="lr1", sets={"model.learning_rate": "0.001"})
    _run(settings, "ircadb_7", 1.86, variant="aug_lr1",
         sets={"model.generator": "True", "model.learning_rate": "0.001"})
    assert qs.main(["--reports", str(reports)]) == 0
    text = (settings / "settings.md").read_text()
    assert "| shipped CT config | 42 | 1.800 | 1.850 | 1.840 | 1.830 | – |" in text
    # fold 7's comparison ran with augmentation, as the benchmark's fold 7 did: one row, named by the lr alone
    assert "| model.learning_rate=0.001 | 42 | 1.900 | 1.860 | 1.880 | 1.880 | +0.050 |" in text
    assert "model.generator=True, model.learning_rate" not in text
    assert "Largest difference between two seeds of the shipped config in one fold: 0.050 (ircadb_17" in text
    # and against the mean of the shipped config's two seeds (1.830 and 1.847)
    assert "Against that mean: model.learning_rate=0.001 (seed 42) +0.042." in text
    assert "validation: lits_117 held out" in text
    # postprocessing: each candidate's mean over folds and seeds, against the one the CT config ships
    assert f"| {GROW2} (shipped) | 2 | 1.820 | 1.837 | 1.828 | – |" in text
    assert "| none | 1 | 1.830 | 1.847 | 1.838 | +0.010 |" in text


def test_a_path_inside_the_checkout_is_named_relative_to_it(qs):
    assert qs._short(f"'{qs.REPO}/bench/results/pt/best.pt'") == "'bench/results/pt/best.pt'"
    assert qs._short("0.001") == "0.001"


def test_a_run_on_another_processor_is_compared_with_the_shipped_run_on_that_processor(qs, tmp_path):
    """A wall-clock budget buys another number of epochs on another processor: runs of the settings folder
    made there form their own table, against the shipped config's run made beside them."""
    reports, settings = tmp_path / "q", tmp_path / "q" / "settings"
    amd, xeon = "AMD EPYC (2 cores visible)", "Intel Xeon (2 cores visible)"
    for fold, score in (("ircadb_1", 1.85), ("ircadb_17", 1.84)):
        _run(reports, fold, score, machine=amd)
        _run(settings, fold, score - 0.10, machine=xeon, precision="32-true")  # the shipped config, Xeon
        _run(settings, fold, score - 0.05, variant="bs4", sets={"train.batch_size": "4"}, machine=xeon,
             precision="32-true")
    _run(reports, "ircadb_7", 1.86, variant="aug", sets={"model.generator": "True"}, machine=amd)
    _run(settings, "ircadb_7", 1.70, variant="aug", sets={"model.generator": "True"}, machine=xeon,
         precision="32-true")
    _run(settings, "ircadb_7", 1.74, variant="aug_bs4", sets={"model.generator": "True", "train.batch_size": "4"},
         machine=xeon, precision="32-true")
    _run(settings, "ircadb_1", 1.60, seed=43, variant="bs4", sets={"train.batch_size": "4"}, machine=xeon)
    assert qs.main(["--reports", str(reports)]) == 0
    text = (settings / "settings.md").read_text()
    # seed 43 has no shipped run on the Xeon: its batch-4 run is no row, and never stands in for the shipped one
    assert "| 43 |" not in text and "1.600" not in text
    main, other = text.split("## 20 training minutes per fold, validation: blocks, on Intel Xeon")
    assert "| shipped CT config | 42 | 1.850 | 1.860 | 1.840 | 1.850 | – |" in main
    assert "train.batch_size" not in main and "Trained on AMD EPYC (precision bf16-mixed)" in main
    assert "Trained on Intel Xeon (precision 32-true)" in other
    assert "| shipped CT config | 42 | 1.750 | 1.700 | 1.740 | 1.730 | – |" in other
    assert "| train.batch_size=4 | 42 | 1.800 | 1.740 | 1.790 | 1.777 | +0.047 |" in other
