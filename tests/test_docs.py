"""The checks of ``make docs-check`` (tools/docs_check.py), in pytest, and the checker itself."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dc():
    spec = importlib.util.spec_from_file_location("docs_check", ROOT / "tools" / "docs_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_links_between_the_docs_resolve(dc):
    assert dc.check_links(dc.doc_files()) == []


def test_config_reference_is_in_sync(dc):
    assert dc.check_config_reference() == []


def test_the_package_map_names_every_module(dc):
    assert dc.check_package_map() == []


def test_readme_is_at_most_400_lines(dc):
    assert dc.check_readme_length() == []


def test_docs_speak_of_the_software_not_of_how_it_was_made(dc):
    for doc in dc.doc_files():
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            assert not re.search(r"\bsessions?\b", line, re.I), f"{doc.relative_to(ROOT)}:{n}: {line}"


@pytest.mark.parametrize("heading,expected", [
    ("Demo on phantoms (`make demo`)", "demo-on-phantoms-make-demo"),
    ("Model zoo (`bench/models.py`, `bench/zoo_quality.py`)", "model-zoo-benchmodelspy-benchzoo_qualitypy"),
    ("[model]", "model"),
    ("bf16 against fp32, and a whole CT volume", "bf16-against-fp32-and-a-whole-ct-volume"),
    ("See [the docs](docs/x.md) **now**", "see-the-docs-now"),
])
def test_slugs_are_githubs(dc, heading, expected):
    assert dc.slug(heading) == expected


def test_broken_links_and_anchors_are_reported(dc, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Same\n\n## Same\n\n```\n## not a heading\n```\n"
                                            "[ok](#same-1) [bad](#not-a-heading) [up](../README.md#top)\n")
    (tmp_path / "README.md").write_text("# Top\n\n[a](docs/a.md#a) [gone](docs/gone.md) `[code](nowhere.md)`\n"
                                        "[web](https://example.org/x#y) ![img](docs/img.png)\n")
    found = dc.check_links(dc.doc_files(tmp_path), tmp_path)
    assert len(found) == 3, found
    assert any("docs/gone.md does not exist" in p for p in found)
    assert any("docs/img.png does not exist" in p for p in found)
    assert any("#not-a-heading" in p and "docs/a.md:10" in p for p in found)


def test_a_long_readme_and_a_stale_reference_are_reported(dc, tmp_path):
    (tmp_path / "README.md").write_text("line\n" * 401)
    assert "401 lines" in dc.check_readme_length(tmp_path)[0]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "config.md").write_text("# Config\n<!-- config-reference:start -->\nold\n"
                                                 "<!-- config-reference:end -->\n")
    assert "tools/sync_docs.py" in dc.check_config_reference(tmp_path)[0]
