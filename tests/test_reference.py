"""Every citation of the technical reference resolves inside the repository.

`docs/reference.md` gives each numbered heading an anchor `s<number>` on the line above it (`s1.7`,
`s2.10`, `sA`). Code, configs and tests cite it as `docs/reference.md §1.7` (ranges `§2.6-2.7`,
appendices `Appendix A`); Markdown links to the anchor, `[reference §1.7](reference.md#s1.7)`. Any
section sign in a scanned file counts as a citation of the reference, so a file using one must name
`reference.md` somewhere. The outside document the code was first written from is not part of the
repository: its name and any path into the developers' sibling folder are errors.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference.md"

SECTION_SIGN = "\u00a7"
TEXT_SUFFIXES = {".py", ".md", ".cfg", ".txt", ".ipynb", ".toml", ".json", ".yaml", ".yml", ".sh", ".ini"}
TEXT_DIRS = (".ci/", "configs/")
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", "runs", "outputs", "build"}

ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
HEADING = re.compile(r"^#{1,6}\s+(?:(\d+(?:\.\d+)*)\.?|Appendix ([A-Z])\.)\s")
_SECTION = r"(?:\d+(?:\.\d+)*|[A-Z]\b)"
CITATION = re.compile(SECTION_SIGN + rf"\s*({_SECTION})(?:\s*[-\u2013]\s*({_SECTION}))?")
APPENDIX = re.compile(r"\bAppendix ([A-Z])\b")
LINK = re.compile(r"reference\.md#([\w.\-]+)")
LOCAL_LINK = re.compile(r"\]\(#([\w.\-]+)\)")
# Built so that this file does not match them itself.
RETIRED = (
    (re.compile(r"\bS[P]EC\b"), "cites the retired outside reference; cite docs/reference.md"),
    (re.compile(r"\.\./shared\b"), "points outside the repository; cite docs/reference.md"),
    (re.compile(r"shared/S[P]EC"), "points outside the repository; cite docs/reference.md"),
)


def parse_reference(text: str) -> tuple[set[str], set[str], list[str]]:
    """Section numbers, anchors, and structural problems of a reference document.

    A numbered heading must have the anchor `s<number>` on the nearest non-blank line above it;
    anchors and section numbers must be unique.
    """
    sections: set[str] = set()
    anchors: set[str] = set()
    problems: list[str] = []
    previous = ""
    for lineno, line in enumerate(text.splitlines(), 1):
        for anchor in ANCHOR.findall(line):
            if anchor in anchors:
                problems.append(f"reference line {lineno}: duplicate anchor {anchor!r}")
            anchors.add(anchor)
        heading = HEADING.match(line)
        if heading:
            number = heading.group(1) or heading.group(2)
            if number in sections:
                problems.append(f"reference line {lineno}: section {number} numbered twice")
            sections.add(number)
            if f"s{number}" not in ANCHOR.findall(previous):
                problems.append(f'reference line {lineno}: heading {number} lacks <a id="s{number}"></a> above it')
        if line.strip():
            previous = line
    return sections, anchors, problems


def citation_problems(text: str, where: str, sections: set[str], anchors: set[str],
                      is_reference: bool = False) -> list[str]:
    """`where:line: ...` for every citation in `text` that the reference cannot resolve."""
    problems: list[str] = []
    names_reference = is_reference or "reference.md" in text
    for lineno, line in enumerate(text.splitlines(), 1):
        at = f"{where}:{lineno}"
        for pattern, why in RETIRED:
            if pattern.search(line):
                problems.append(f"{at}: {why}: {line.strip()[:120]}")
        cited = [n for match in CITATION.finditer(line) for n in match.groups() if n]
        if SECTION_SIGN in line or "reference.md" in line:
            cited += APPENDIX.findall(line)
        if cited and not names_reference:
            problems.append(f"{at}: cites {SECTION_SIGN}{cited[0]} but the file never names docs/reference.md")
        for number in cited:
            if number not in sections:
                problems.append(f"{at}: docs/reference.md has no section {number}")
        links = LINK.findall(line) + (LOCAL_LINK.findall(line) if is_reference else [])
        for anchor in (a.rstrip(".") for a in links):  # a sentence may end right after the anchor
            if anchor not in anchors:
                problems.append(f"{at}: docs/reference.md has no anchor #{anchor}")
    return problems


def _is_text(rel: str) -> bool:
    return Path(rel).suffix in TEXT_SUFFIXES or rel.startswith(TEXT_DIRS)


def repository_text_files() -> list[str]:
    """Tracked and not-ignored untracked text files, relative to the repository root."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=30).stdout.decode()
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.SubprocessError):  # not a git checkout: walk the tree instead
        names = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            names += [str((Path(folder) / f).relative_to(ROOT)) for f in files]
    return sorted({n for n in names if _is_text(n) and (ROOT / n).is_file()})


def _read(rel: str) -> str:
    text = (ROOT / rel).read_text(encoding="utf-8", errors="replace")
    if rel.endswith((".json", ".ipynb")):
        text = text.replace("\\u00a7", SECTION_SIGN)  # json.dumps escapes the section sign
    return text


def test_reference_has_every_section_with_a_unique_anchor():
    sections, anchors, problems = parse_reference(REFERENCE.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)
    expected = {"0", "1", "2", "3", "4", "5", "6", "6.1", "7", "8", "A", "B"}
    expected |= {f"1.{i}" for i in range(1, 8)} | {f"2.{i}" for i in range(1, 11)}
    expected |= {f"3.{i}" for i in range(1, 7)} | {f"4.{i}" for i in range(1, 7)}
    expected |= {f"5.{i}" for i in range(1, 4)}
    assert expected <= sections, f"missing sections: {sorted(expected - sections)}"
    assert {f"s{n}" for n in sections} <= anchors


def test_every_citation_in_the_repository_resolves():
    sections, anchors, _ = parse_reference(REFERENCE.read_text(encoding="utf-8"))
    files = repository_text_files()
    assert "docs/reference.md" in files and "README.md" in files
    problems = []
    for rel in files:
        problems += citation_problems(_read(rel), rel, sections, anchors,
                                      is_reference=rel == "docs/reference.md")
    assert not problems, "unresolved citations:\n" + "\n".join(problems)


def test_checker_reports_what_it_should():
    sections = {"1", "1.7", "2", "2.6", "2.7", "A"}
    anchors = {f"s{n}" for n in sections}
    sign = SECTION_SIGN
    good = (f"see docs/reference.md {sign}1.7 and {sign}2.6-2.7, Appendix A\n"
            f"[reference {sign}1.7](reference.md#s1.7)\n")
    assert citation_problems(good, "good.py", sections, anchors) == []

    bad = "\n".join([
        f"docs/reference.md {sign}99.9",                  # 1: no such section
        "[x](reference.md" + "#s99.9)",                   # 2: no such anchor
        f"docs/reference.md {sign}2.6-2.99",              # 3: range end missing
        "S" + "PEC " + sign + "1.7",                      # 4: retired document
        "see " + "/".join(["..", "shared", "notes.md"]),  # 5: outside the repository (not folded into the .pyc)
        f"docs/reference.md {sign}1.7, Appendix " + "Z",  # 6: no such appendix
    ])
    found = citation_problems(bad, "bad.py", sections, anchors)
    for lineno in range(1, 7):
        assert any(p.startswith(f"bad.py:{lineno}:") for p in found), (lineno, found)
    assert any("99.9" in p for p in found) and any("#s99.9" in p for p in found)
    assert any("2.99" in p for p in found) and any("section Z" in p for p in found)

    unnamed = citation_problems(f"as in {sign}1.7\n", "bare.py", sections, anchors)
    assert len(unnamed) == 1 and "never names" in unnamed[0]


def test_parser_reports_duplicate_and_missing_anchors():
    text = "\n".join([
        '<a id="s1"></a>', "## 1. One", "",
        '<a id="s1"></a>', "### 1.1 Anchor reused",
        "### 1.2 No anchor",
        '<a id="sA"></a>', "## Appendix A. Values",
    ])
    sections, anchors, problems = parse_reference(text)
    assert sections == {"1", "1.1", "1.2", "A"} and anchors == {"s1", "sA"}
    assert any("duplicate anchor 's1'" in p for p in problems)
    assert any("heading 1.1 lacks" in p for p in problems)
    assert any("heading 1.2 lacks" in p for p in problems)
    assert len(problems) == 3
