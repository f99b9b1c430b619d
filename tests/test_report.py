"""The HTML report: self-contained, and rendered by headless Chromium with no request leaving the page.

The browser check runs Chromium (Debian's ``chromium`` package) with ``--screenshot`` and
``--log-net-log``: the screenshot must show the overlays and the tables, and the network log must
hold no request made by the page (requests whose initiator is the page's ``file://`` origin; the
browser's own background requests have none).  A probe page with two external images shows that
the same log does catch a page's requests.  Skipped, with the reason, where no Chromium is installed.
"""
import base64
import io
import json
import re
import shutil
import socket
import subprocess

import numpy as np
import pytest

from flexunet.infer.volume import VolumePredictor

from test_api import project  # noqa: F401  (fixture)
from test_dicom_seg import write_ct_series
from test_outputs import ThresholdPredictor
from volume_helpers import synthetic_case

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
CHROMIUM = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


@pytest.fixture
def report(project, tmp_path):
    """The report of a DICOM CT with a liver and two lesions."""
    hu, _, _ = synthetic_case(0, shape=(96, 80, 24), spacing=(1.0, 1.0, 2.5))
    hu[60:66, 30:36, 10:14] = 10.0  # a second, smaller lesion
    dcm = write_ct_series(tmp_path / "ct", hu, spacing=(1.0, 1.0, 2.5))
    seg = VolumePredictor(project / "c.config", predictor=ThresholdPredictor()).segment(dcm)
    assert len(seg.lesions()) >= 2
    return seg.save_report(tmp_path / "case.html"), seg


def test_the_report_is_self_contained(report):
    from PIL import Image

    path, seg = report
    text = path.read_text()
    assert not re.search(r"https?://", text, re.I), "a URL in the report"
    assert not re.search(r"<(script|link|iframe|object|embed|base)\b|@import|url\(", text, re.I)
    assert "href=" not in text.lower()
    sources = re.findall(r"""\bsrc=["']([^"']*)["']""", text)
    assert len(sources) == 2 + min(5, len(seg.lesions()))
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert img.format == "PNG" and min(img.size) > 50
    # the sections a report holds
    for needle in ("Patient and series", "Phantom^Liver", "FX-0042", "Statistics", "Lesions", "long axis mm",
                   "Provenance", "weights_sha256", "Coronal slice", "Lesion 1: long axis", "Lesion 2: long axis"):
        assert needle in text, needle
    les = seg.lesions()[0]
    assert f"{les.long_axis_mm:,.1f}" in text and f"{seg.volumetry.liver_ml:,.1f} mL" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium(page, tmp_path, name):
    """Screenshot and network log of ``page`` opened by headless Chromium."""
    shot, netlog = tmp_path / f"{name}.png", tmp_path / f"{name}.netlog.json"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / (name + '.profile')}", "--window-size=1100,2400",
           f"--screenshot={shot}", f"--log-net-log={netlog}", page.as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (exit {run.returncode}): {run.stderr[-500:]}"
    return shot, netlog


def page_requests(netlog) -> list[str]:
    """URLs the page itself asked for (its initiator is its own origin; the browser's requests have none)."""
    log = json.loads(netlog.read_text())
    kinds = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if kinds.get(event["type"]) == "URL_REQUEST_START_JOB" and "url" in params:
            if params.get("initiator") != "not an origin":
                urls.append(params["url"])
    return urls


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")
def test_the_report_renders_in_headless_chromium_without_network_requests(report, tmp_path):
    from PIL import Image

    path, _ = report
    # the probe: the same log catches a page's requests, refused or unresolvable
    probe = tmp_path / "probe.html"
    port = _free_port()
    probe.write_text(f'<!DOCTYPE html><p>probe</p><img src="http://127.0.0.1:{port}/probe.png">'
                     '<img src="https://probe.invalid/x.png">')
    _, probe_log = _chromium(probe, tmp_path, "probe")
    caught = page_requests(probe_log)
    assert f"http://127.0.0.1:{port}/probe.png" in caught and "https://probe.invalid/x.png" in caught, caught

    shot, netlog = _chromium(path, tmp_path, "report")
    assert page_requests(netlog) == []
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    assert (rgb.sum(-1) < 600).mean() > 0.05  # not a blank page
    dark_text = (rgb.max(-1) < 80)[:400]        # headings and tables at the top
    assert dark_text.sum() > 2000
    liver_blue = (b > r + 60) & (b > g + 20)
    tumour_red = (r > g + 80) & (r > b + 80)
    grey_ct = (abs(r - g) < 6) & (abs(g - b) < 6) & (r > 40) & (r < 220)
    assert liver_blue.sum() > 2000 and tumour_red.sum() > 200 and grey_ct.sum() > 10000
