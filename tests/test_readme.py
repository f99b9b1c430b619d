from pathlib import Path

from flexunet.config import reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_reference_is_current():
    assert reference_markdown() in README.read_text(), "run: .venv/bin/python tools/sync_readme.py"


def test_readme_documents_every_command():
    from flexunet.cli import build_parser

    text = README.read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"`{name}" in text, name
