"""``flexunet demo``: the whole volume pipeline end to end, shrunk by ``--set`` so it runs in seconds."""
from __future__ import annotations

import json

import nibabel as nib

from flexunet.cli import main

TINY = ["model.image_width=64", "model.image_height=64", "model.num_layers=3", "model.base_filters=4",
        "train.epochs=1", "train.max_time_minutes=1", "train.num_workers=0", "train.num_infer_images=1"]


def _sets(items):
    return [a for it in items for a in ("--set", it)]


def test_demo_runs_every_step_and_reports_targets(tmp_path, capsys):
    out = tmp_path / "demo"
    # a folder the demo replaces may be a link left by another tool: it must not write through it
    other = tmp_path / "other_models"
    other.mkdir()
    (other / "best.pt").write_bytes(b"someone else's")
    out.mkdir()
    (out / "models").symlink_to(other, target_is_directory=True)
    rc = main(["--quiet", "demo", str(out), "--strict", *_sets(TINY)])
    assert (other / "best.pt").read_bytes() == b"someone else's" and not (out / "models").is_symlink()
    # one epoch of a 4-filter model at 64x64 cannot reach tumour Dice 0.80: --strict must say so
    assert rc != 0
    text = capsys.readouterr().out
    assert "per-case Dice" in text and "target >= 0.95" in text and "target >= 0.8" in text
    assert "global Dice (pooled over the cases)" in text
    assert "NOT met" in text
    # the overrides reached training: the model was built at 64x64 with 4 filters
    from flexunet.models.checkpoint import load_state_dict

    _, meta = load_state_dict(out / "models" / "best.pt")
    assert meta["image_width"] == 64 and meta["model_config"]["base_filters"] == 4
    # held-out cases were segmented as volumes with the input's geometry
    for case in ("phantom_006", "phantom_007"):
        pred = nib.load(out / "pred" / f"{case}.nii.gz")
        img = nib.load(out / "cases" / case / "image.nii.gz")
        assert pred.shape == img.shape
        assert (pred.affine == img.affine).all()
    res = json.loads((out / "eval" / "volume_metrics.json").read_text())
    assert {"liver", "tumour"} <= set(res["aggregate"])
    assert {r["case_id"] for r in res["cases"]} == {"phantom_006", "phantom_007"}
    assert any((out / "mini_test_output_overlay").iterdir())
    # the training set is patient-wise: no test phantom among the training slices
    train = {p.name.rsplit("_", 1)[0] for p in (out / "dataset" / "train" / "images").iterdir()}
    assert train and not train & {"phantom_005", "phantom_006", "phantom_007"}


def test_demo_bad_override_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", str(out), "--set", "model.loss=nonsense"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "loss" in err and "nonsense" in err and "Traceback" not in err
    assert not (out / "cases").exists()
