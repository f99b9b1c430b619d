"""Check the user docs (make docs-check; also run by make test and tests/test_docs.py).

    python tools/docs_check.py

Checks, over README.md and docs/*.md:
- every relative link resolves: the file or folder exists, and a ``#anchor`` names a heading of the
  target Markdown file (GitHub's slugs: lower case, punctuation dropped, spaces to hyphens, ``-1``,
  ``-2``, ... for repeats) or an ``<a id=...>``/``<a name=...>`` in it;
- docs/config.md holds the current config reference (``tools/sync_docs.py`` regenerates it);
- README.md has at most ``README_MAX_LINES`` lines;
- docs/architecture.md's package map names every module of ``src/flexunet`` and no module that is gone.
Prints one line per problem and exits 1 when there is any, 0 otherwise.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 400

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:[^>]*\s)?(?:id|name)=[\"']([^\"']+)[\"']", re.I)
# [text](target) and ![alt](target); the target ends at whitespace (an optional "title" follows) or ")"
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_SRC = re.compile(r"<(?:img|a)\s[^>]*(?:src|href)=[\"']([^\"']+)[\"']", re.I)
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) of ``text`` outside fenced code blocks."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: ``Demo on phantoms (`make demo`)`` -> ``demo-on-phantoms-make-demo``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text)                        # inline HTML tags
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())        # punctuation, incl. ` * ( ) [ ] . , :
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown file defines: its headings' slugs (repeats numbered) and HTML ids."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in _prose_lines(text):
        m = _HEADING.match(line)
        if m:
            base = slug(m.group(2))
            k = seen.get(base, 0)
            seen[base] = k + 1
            out.add(base if k == 0 else f"{base}-{k}")
        out.update(_HTML_ANCHOR.findall(line))
    return out


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of the Markdown and HTML links of ``text``, outside code."""
    out = []
    for n, line in _prose_lines(text):
        line = _INLINE_CODE.sub("", line)
        out += [(n, t) for t in _LINK.findall(line)]
        out += [(n, t) for t in _HTML_SRC.findall(line)]
    return out


def check_links(files: list[Path], root: Path = ROOT) -> list[str]:
    """One message per relative link of ``files`` whose file, folder or anchor does not exist."""
    problems = []
    cache: dict[Path, set[str]] = {}
    for doc in files:
        for n, target in links(doc.read_text(encoding="utf-8")):
            if _EXTERNAL.match(target):
                continue
            path_part, _, anchor = target.partition("#")
            dest = (doc.parent / path_part).resolve() if path_part else doc.resolve()
            where = f"{doc.relative_to(root)}:{n}: link {target!r}"
            if not dest.exists():
                problems.append(f"{where}: {dest.relative_to(root) if dest.is_relative_to(root) else dest} "
                                "does not exist")
                continue
            if not anchor:
                continue
            if dest.suffix != ".md" or dest.is_dir():
                problems.append(f"{where}: an anchor into {dest.name}, which is not a Markdown file")
                continue
            if dest not in cache:
                cache[dest] = anchors(dest.read_text(encoding="utf-8"))
            if anchor not in cache[dest]:
                near = sorted(a for a in cache[dest] if anchor.split("-")[0] in a)[:3]
                problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(root)}"
                                + (f" (similar: {', '.join('#' + a for a in near)})" if near else ""))
    return problems


def check_config_reference(root: Path = ROOT) -> list[str]:
    """A message when docs/config.md differs from the generated config reference."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/sync_docs.py, beside this file
    try:
        from sync_docs import synced
    finally:
        sys.path.pop(0)
    doc = root / "docs" / "config.md"
    if not doc.exists():
        return [f"{doc.relative_to(root)} does not exist; expected the config reference (python tools/sync_docs.py)"]
    text = doc.read_text(encoding="utf-8")
    try:
        current = synced(text)
    except ValueError as e:
        return [f"{doc.relative_to(root)}: {e}"]
    if current != text:
        return [f"{doc.relative_to(root)} is not the current config reference; run: python tools/sync_docs.py"]
    return []


def check_readme_length(root: Path = ROOT, limit: int = README_MAX_LINES) -> list[str]:
    """A message when README.md is longer than ``limit`` lines."""
    n = len((root / "README.md").read_text(encoding="utf-8").splitlines())
    return [f"README.md has {n} lines; expected at most {limit} (move detail into docs/)"] if n > limit else []


def check_package_map(root: Path = ROOT) -> list[str]:
    """Messages for modules missing from docs/architecture.md's package map, and for listed ones that are gone."""
    doc = root / "docs" / "architecture.md"
    pkg = root / "src" / "flexunet"
    if not doc.exists() or not pkg.is_dir():
        return []
    listed = set(re.findall(r"^\|\s*`([\w/]+\.py)`\s*\|", doc.read_text(encoding="utf-8"), re.M))
    present = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*.py")}
    out = [f"docs/architecture.md: the package map lacks {m}" for m in sorted(present - listed)]
    out += [f"docs/architecture.md: the package map lists {m}, which src/flexunet does not have"
            for m in sorted(listed - present)]
    return out


def problems(root: Path = ROOT) -> list[str]:
    """Every problem the checks find, one line each."""
    return (check_links(doc_files(root), root) + check_config_reference(root) + check_readme_length(root)
            + check_package_map(root))


def main() -> int:
    found = problems()
    for p in found:
        print(f"docs-check: {p}", file=sys.stderr)
    if found:
        return 1
    print(f"docs-check: {len(doc_files())} files, links, config reference, README length and package map ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
