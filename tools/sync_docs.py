"""Regenerate the config reference inside README.md from the schema (python tools/sync_readme.py)."""
from pathlib import Path

from flexunet.config import reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def synced(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference_markdown()}\n{END}{tail}"


if __name__ == "__main__":
    README.write_text(synced(README.read_text()))
    print(f"updated {README}")
