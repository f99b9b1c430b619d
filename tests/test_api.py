"""The Python API (``from flexunet import ...``): arrays and paths in, labels on the input's grid out."""
from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import flexunet
from flexunet.cli import main
from flexunet.errors import ConfigError, DataError
from flexunet.models import create_model
from flexunet.models.checkpoint import save_weights

from test_infer_volume import CONFIG as VOLUME_CONFIG
from volume_helpers import synthetic_case, write_case

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "flexunet"

# the volume project of test_infer_volume, tumour filters off so that an untrained model's small tumours stay
CONFIG = VOLUME_CONFIG + "[infer]\nmin_tumour_mm3 = 0\n"


@pytest.fixture
def project(tmp_path):
    import torch

    (tmp_path / "c.config").write_text(CONFIG)
    cfg = flexunet.load_config(tmp_path / "c.config")
    torch.manual_seed(3)
    model = create_model(cfg.model)
    with torch.no_grad():  # a bias towards liver, so an untrained model's labels are not all background
        for p in model.parameters():
            p.mul_(3.0)
    save_weights(tmp_path / "models" / "best.pt", model, cfg.model)
    return tmp_path


def _oblique_case(project):
    # flipped and permuted axes: the labels must come back in the input's own orientation
    affine = np.array([[0, -2.0, 0, 50], [-2.0, 0, 0, 40], [0, 0, 4.0, -10], [0, 0, 0, 1]])
    return write_case(project / "cases", "p0", seed=1, affine=affine) / "image.nii.gz"


def test_segment_of_an_array_equals_infer_volume_on_the_same_nifti(project):
    path = _oblique_case(project)
    assert main(["--quiet", "infer-volume", str(project / "c.config"), str(path), "--output",
                 str(project / "out")]) == 0
    cli_labels = np.asarray(nib.load(project / "out" / "p0.nii.gz").dataobj)
    img = nib.load(path)
    seg = flexunet.segment(img.get_fdata(), affine=img.affine, config=project / "c.config")
    assert seg.labels.dtype == np.uint8 and seg.labels.shape == img.shape
    assert np.array_equal(seg.labels, cli_labels)
    assert 0 < np.count_nonzero(seg.labels) < seg.labels.size  # not a trivial all-one-class answer
    assert np.allclose(seg.affine, img.affine)
    assert seg.spacing == pytest.approx((2.0, 2.0, 4.0))


def test_path_nibabel_image_and_array_give_the_same_segmentation(project):
    path = _oblique_case(project)
    vp = flexunet.VolumePredictor(project / "c.config")
    img = nib.load(path)
    a = vp.segment(path)
    b = vp.segment(img)
    c = vp.segment(np.asarray(img.dataobj), affine=img.affine)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.labels, c.labels)
    assert a.source == str(path) and c.source == "array"
    assert a.volumetry == c.volumetry
    assert set(a.timings) >= {"read_s", "predict_s", "postprocess_s"}


def test_volumetry_and_save(project, tmp_path):
    hu, _, affine = synthetic_case(0)
    seg = flexunet.segment(hu, config=project / "c.config", affine=affine, postprocess=False)
    voxel_ml = 2.0 * 2.0 * 4.0 / 1000.0
    v = seg.volumetry
    assert v.liver_ml == pytest.approx(np.count_nonzero(seg.labels >= 1) * voxel_ml)
    assert v.tumour_ml == pytest.approx(np.count_nonzero(seg.labels == 2) * voxel_ml)
    if v.liver_ml:
        assert v.burden_pct == pytest.approx(100 * v.tumour_ml / v.liver_ml)
    assert isinstance(v.lesion_count, int)
    (tmp_path / "x").mkdir()
    out = seg.save(tmp_path / "x" / "labels.nii.gz")
    back = nib.load(out)
    assert np.array_equal(np.asarray(back.dataobj), seg.labels) and np.allclose(back.affine, affine)
    assert np.array_equal(np.asarray(seg.to_nifti().dataobj), seg.labels)
    assert not list(tmp_path.glob("x/.*tmp*"))


def test_segment_refuses_an_array_without_a_valid_affine(project):
    hu, _, affine = synthetic_case(0)
    with pytest.raises(DataError, match="affine= is required"):
        flexunet.segment(hu, config=project / "c.config")
    with pytest.raises(DataError, match="singular"):
        flexunet.segment(hu, config=project / "c.config", affine=np.zeros((4, 4)))
    with pytest.raises(DataError, match="expected a 3-D"):
        flexunet.segment(hu[..., 0], config=project / "c.config", affine=affine)


def test_load_config_takes_overrides_as_strings_or_a_mapping(project):
    a = flexunet.load_config(project / "c.config", ["model.base_filters=8", "slice.hu_window=(-50, 200)"])
    b = flexunet.load_config(project / "c.config", {"model.base_filters": 8, "slice.hu_window": (-50, 200)})
    assert a.model.base_filters == b.model.base_filters == 8 and a.slice.hu_window == b.slice.hu_window
    with pytest.raises(ConfigError):
        flexunet.api.as_config(a, ["model.base_filters=4"])


def test_evaluate_volumes_on_arrays(project):
    _, lab, affine = synthetic_case(0)
    res = flexunet.evaluate_volumes(lab, lab, spacing=(2.0, 2.0, 4.0))
    assert res["classes"]["liver"]["dice"] == pytest.approx(1.0)


def test_the_api_is_typed_and_documented():
    for name in ("segment", "load_config", "read_volume", "train", "evaluate", "infer", "infer_volumes",
                 "evaluate_volumes", "slice_cases", "write_phantoms", "run_demo"):
        fn = getattr(flexunet, name)
        assert callable(fn) and inspect.isfunction(fn), name
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty, name
        doc = inspect.getdoc(fn)
        assert doc and "Returns:" in doc, name
    text = subprocess.run([sys.executable, "-c", "import flexunet; help(flexunet.segment)"], capture_output=True,
                          text=True, check=True).stdout
    assert "segment(ct" in text and "-> 'Segmentation'" in text and "Args:" in text
    # the subpackages of the same names stay importable beside the functions
    from flexunet.infer import volume
    from flexunet.train import runner

    assert flexunet.train is flexunet.api.train and flexunet.infer is flexunet.api.infer
    assert volume.VolumePredictor is flexunet.VolumePredictor and callable(runner.train)


def test_import_flexunet_loads_no_torch():
    code = "import sys, flexunet; flexunet.__version__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node


def test_nothing_in_the_package_calls_the_cli():
    for path in SRC.rglob("*.py"):
        if path.name in ("cli.py", "__main__.py"):
            continue
        for node in _imports(path):
            assert not (node.module or "").endswith("cli"), f"{path} imports {node.module}"


def test_no_private_name_is_imported_from_another_package():
    for path in SRC.rglob("*.py"):
        package = path.parent.relative_to(SRC).parts
        for node in _imports(path):
            if node.level == 0 and not (node.module or "").startswith("flexunet"):
                continue
            if node.level:
                base = list(package)[: len(package) - (node.level - 1)] if node.level > 1 else list(package)
                target = base + ((node.module or "").split(".") if node.module else [])
            else:
                target = node.module.split(".")[1:]
            target_pkg = tuple(target[:1])
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    assert target_pkg == tuple(package[:1]), \
                        f"{path.relative_to(ROOT)} imports {alias.name} from {'.'.join(target)}"


README_EXAMPLE = re.compile(r"<!-- api-example:start -->\s*```python\n(.*?)```\s*<!-- api-example:end -->", re.S)


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    match = README_EXAMPLE.search(text)
    if match is None:
        pytest.fail("README.md has no <!-- api-example:start --> python block")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(match.group(1), "README.md example", "exec"), namespace)
    seg, seg7 = namespace["seg"], namespace["seg7"]
    assert seg.labels.shape == nib.load(tmp_path / "toy_run/cases/phantom_006/image.nii.gz").shape
    assert (tmp_path / "toy_run" / "phantom_006_labels.nii.gz").is_file()
    assert seg7.labels.shape == nib.load(tmp_path / "toy_run/cases/phantom_007/image.nii.gz").shape
    # the demo's own infer-volume output and the API agree voxel for voxel
    cli = np.asarray(nib.load(tmp_path / "toy_run" / "pred" / "phantom_006.nii.gz").dataobj)
    assert np.array_equal(seg.labels, cli)


def test_the_inference_path_of_the_seed_model_imports_no_training_stack(project):
    """infer-volume with the seed architecture loads neither MONAI, Lightning nor matplotlib (seconds of
    imports); the zoo, which needs MONAI, is imported only for its own models."""
    ct = write_case(project / "cases", "p0", seed=1) / "image.nii.gz"
    code = ("import sys; from flexunet.cli import main; "
            f"rc = main(['--quiet', 'infer-volume', {str(project / 'c.config')!r}, {str(ct)!r}, '--output', "
            f"{str(project / 'out')!r}]); "
            "print(rc, sorted(m for m in ('monai', 'lightning', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0 []"
