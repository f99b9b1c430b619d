"""infer-volume --statistics / --report and the Segmentation's statistics, lesions and report from Python."""
import csv
import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

import flexunet
from flexunet.cli import main
from flexunet.errors import DataError
from flexunet.infer.batch import output_formats
from flexunet.infer.volume import compact_hu
from flexunet.metrics.lesions import lesion_table

from test_api import project  # noqa: F401  (fixture)
from volume_helpers import synthetic_case, write_case


class ThresholdPredictor:
    """A stand-in model: liver and tumour by the centre slice's windowed intensity (HU window -100..250)."""

    device = "cpu"

    def probs(self, x):
        c = torch.as_tensor(x)[:, x.shape[1] // 2]
        liver = (c > 0.42) & (c < 0.55)   # about 47 .. 93 HU
        tumour = (c > 0.27) & (c <= 0.42)  # about -5 .. 47 HU
        return torch.stack([~(liver | tumour), liver, tumour], 1).float()


@pytest.fixture
def threshold_model(monkeypatch):
    """Every VolumePredictor built from a config runs :class:`ThresholdPredictor` (the CLI included)."""
    from flexunet.infer import common

    monkeypatch.setattr(common, "load_predictor", lambda *a, **k: ThresholdPredictor())


def demo_test_phantoms(root):
    """The phantom demo's two test volumes (``flexunet demo`` tests on phantom_008 and phantom_009 of 10)."""
    from flexunet.data.phantom import generate_phantom

    paths = []
    for n in (8, 9):
        image, label, affine = generate_phantom((0, n))
        d = root / f"phantom_{n:03d}"
        d.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, affine), d / "image.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), d / "label.nii.gz")
        paths.append(d / "image.nii.gz")
    return paths


def _html_ml(text: str, row: str) -> float:
    match = re.search(rf"<th>{re.escape(row)}</th><td>([\d,.]+) mL", text)
    assert match, row
    return float(match.group(1).replace(",", ""))


def test_statistics_and_report_agree_with_evaluate_volume_to_0_1_ml(project, threshold_model, capsys):
    cases = project / "cases"
    inputs = demo_test_phantoms(cases)
    out = project / "pred"
    assert main(["infer-volume", str(project / "c.config"), *map(str, inputs), "--output", str(out),
                 "--statistics", "--report"]) == 0
    printed = capsys.readouterr().out
    assert "statistics.csv" in printed and "report(s)" in printed
    assert main(["--quiet", "evaluate-volume", str(out), str(cases)]) == 0
    cases_json = json.loads((out / "volume_metrics.json").read_text())["cases"]
    metrics = {c["case_id"]: c["volumetry"]["pred"] for c in cases_json}
    with open(out / "statistics.csv", newline="") as fh:
        rows = {r["case"]: r for r in csv.DictReader(fh)}
    assert set(metrics) == set(rows) == {"phantom_008", "phantom_009"}
    worst = {"json/csv": 0.0, "html": 0.0}
    for case, ref in metrics.items():
        stats = json.loads((out / f"{case}.json").read_text())
        html = (out / f"{case}.html").read_text()
        assert ref["tumour_ml"] > 1.0 and ref["liver_ml"] > 100.0  # a real test: both classes present
        for key, label in (("liver_ml", "Liver volume (tumours included)"), ("tumour_ml", "Tumour volume")):
            for where, value in (("json/csv", stats[key]), ("json/csv", float(rows[case][key])),
                                 ("html", _html_ml(html, label))):  # the page shows one decimal
                worst[where] = max(worst[where], abs(value - ref[key]))
                assert value == pytest.approx(ref[key], abs=0.1), (case, key, where)
        assert stats["lesion_count"] == ref["n_tumours"] == len(stats["lesions"])
        assert stats["burden_pct"] == pytest.approx(ref["tumour_pct_of_liver"], abs=0.01)
        # the statistics JSON holds its provenance, HU, spacing and timings
        assert {"liver_hu", "tumour_hu", "spacing_mm", "model", "flexunet_version", "timings"} <= set(stats)
        assert stats["liver_hu"]["mean"] is not None and stats["spacing_mm"] == [1.5, 1.5, 3.0]
        assert stats["model"]["architecture"] and stats["model"]["config"].endswith("c.config")
        assert set(stats["timings"]) >= {"read_s", "predict_s", "postprocess_s", "write_s"}
        with open(out / f"{case}_lesions.csv", newline="") as fh:
            lesion_rows = list(csv.DictReader(fh))
        assert [int(r["id"]) for r in lesion_rows] == list(range(1, stats["lesion_count"] + 1))
    print(f"largest |statistics - evaluate-volume| mL: {worst}")
    assert worst["json/csv"] <= 1e-3 and worst["html"] <= 0.05 + 1e-9
    assert not list(out.glob(".*tmp*"))  # every write atomic: no temporary file left behind


def test_the_python_api_gives_statistics_lesions_and_a_report(project, threshold_model, tmp_path):
    (path,) = demo_test_phantoms(project / "cases")[:1]
    seg = flexunet.segment(path, config=project / "c.config")
    assert seg.image is not None and seg.image.dtype == np.int16  # the phantom's HU are whole numbers
    lesions = seg.lesions()
    assert lesions and lesions is seg.lesions()  # computed once
    ref = lesion_table(seg.labels, seg.affine, np.asarray(nib.load(path).dataobj))
    assert [les.as_dict() for les in lesions] == [les.as_dict() for les in ref]
    stats = seg.statistics()
    assert stats["case"] == "phantom_008" and stats["lesion_count"] == seg.volumetry.lesion_count == len(lesions)
    assert stats["liver_ml"] == pytest.approx(seg.volumetry.liver_ml, abs=1e-3)
    img = nib.load(path).get_fdata()
    assert stats["liver_hu"]["mean"] == pytest.approx(img[seg.labels == 1].mean(), abs=1e-3)
    assert stats["tumour_hu"]["std"] == pytest.approx(img[seg.labels == 2].std(), abs=1e-3)
    report = seg.save_report(tmp_path / "r.html")
    text = report.read_text()
    assert "phantom_008" in text and text.count("data:image/png;base64,") == 2 + min(5, len(lesions))
    assert json.loads(seg.save_statistics(tmp_path / "s.json").read_text())["lesion_count"] == len(lesions)
    without = flexunet.segment(path, config=project / "c.config", keep_image=False)
    assert without.image is None and without.statistics()["liver_hu"]["mean"] is None
    assert np.isnan(without.lesions()[0].mean_hu)


def test_infer_volumes_from_python_writes_every_output(project, threshold_model):
    inputs = demo_test_phantoms(project / "cases")
    res = flexunet.infer_volumes(project / "c.config", inputs, project / "out", statistics=True, report=True,
                                 quiet=True, num_parts=2, part_id=1)
    assert [p.rsplit("/", 1)[1] for p in res["written"]] == ["phantom_009.nii.gz"]
    assert res["statistics_csv"].endswith("statistics_part1of2.csv")
    assert [p.rsplit("/", 1)[1] for p in res["statistics"]] == ["phantom_009.json"]
    assert [p.rsplit("/", 1)[1] for p in res["reports"]] == ["phantom_009.html"]
    assert set(res["timings"][0]) >= {"read_s", "predict_s", "write_s", "statistics_report_s"}


def test_bad_output_formats_and_dicom_seg_for_nifti_fail_in_one_line_before_loading(project, capsys):
    path = write_case(project / "cases", "p0", seed=1) / "image.nii.gz"
    (project / "models" / "best.pt").unlink()  # nothing is loaded before these checks
    rc = main(["infer-volume", str(project / "c.config"), str(path), "--output", str(project / "o"),
               "--output-format", "png"])
    err = capsys.readouterr().err
    assert rc == 2 and "--output-format 'png'" in err and "nifti or dicom-seg" in err and len(err.splitlines()) == 1
    rc = main(["infer-volume", str(project / "c.config"), str(path), "--output", str(project / "o"),
               "--output-format", "dicom-seg"])
    err = capsys.readouterr().err
    assert rc == 2 and str(path) in err and "needs a DICOM series" in err and len(err.splitlines()) == 1
    assert not (project / "o").exists()
    assert output_formats("nifti, dicom-seg") == ("nifti", "dicom-seg") == output_formats(["nifti", "dicom-seg"])
    with pytest.raises(DataError):
        output_formats("")


def test_progress_bars_for_many_slices_and_batches_and_quiet_silences_them(project, capsys):
    hu, _, affine = synthetic_case(0, shape=(32, 28, 70))
    paths = []
    for name in ("a", "b"):
        d = project / "cases" / name
        d.mkdir(parents=True)
        nib.save(nib.Nifti1Image(hu, affine), d / "image.nii.gz")
        paths.append(str(d / "image.nii.gz"))
    assert main(["infer-volume", str(project / "c.config"), *paths, "--output", str(project / "o")]) == 0
    err = capsys.readouterr().err
    assert "volumes: 100%" in err and "slices" in err and "/70" in err
    assert main(["--quiet", "infer-volume", str(project / "c.config"), *paths, "--output", str(project / "o")]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_compact_hu_keeps_values_exactly():
    whole = np.asfortranarray(np.arange(-1024, 1000, dtype=np.float32).reshape(4, 11, 46))
    small = compact_hu(whole)
    assert small.dtype == np.int16 and np.array_equal(small, whole) and small.flags.f_contiguous
    frac = whole + 0.25
    assert compact_hu(frac).dtype == np.float32 and np.array_equal(compact_hu(frac), frac)
    assert compact_hu(whole * 100).dtype == np.float32


def test_plain_inference_imports_no_report_or_dicom_seg_code(project):
    path = write_case(project / "cases", "p0", seed=1) / "image.nii.gz"
    code = (f"import sys, flexunet; flexunet.infer_volumes({str(project / 'c.config')!r}, [{str(path)!r}], "
            f"{str(project / 'o')!r}, quiet=True); "
            "print(sorted(m for m in ('highdicom', 'matplotlib', 'flexunet.report.html', 'flexunet.metrics.lesions')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
