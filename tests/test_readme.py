"""README.md: every command is named, the config reference is current, and the Python example runs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from flexunet.config import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIG_DOC = ROOT / "docs" / "config.md"
API_START, API_END = "<!-- api-example:start -->", "<!-- api-example:end -->"


def api_example(text: str) -> str:
    """The Python code between the README's api-example markers (one ```python fence)."""
    assert API_START in text and API_END in text, "README.md lacks the api-example markers"
    block = text.split(API_START, 1)[1].split(API_END, 1)[0]
    m = re.fullmatch(r"\s*```python\n(.*?)```\s*", block, re.S)
    assert m, "expected exactly one ```python block between the api-example markers"
    return m.group(1)


def test_config_reference_in_docs_is_current():
    assert reference_markdown() in CONFIG_DOC.read_text(), "run: .venv/bin/python tools/sync_docs.py"


def test_readme_documents_every_command():
    from flexunet.cli import build_parser

    text = README.read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"`{name}" in text, name


def test_readme_python_example_is_python_and_uses_the_public_api():
    code = api_example(README.read_text())
    compile(code, "README.md:api-example", "exec")
    import flexunet

    for name in sorted(set(re.findall(r"\bflexunet\.(\w+)", code))):
        assert hasattr(flexunet, name), f"the README's example calls flexunet.{name}, which flexunet lacks"


# tests/test_api.py runs the example as written, in the fast suite
