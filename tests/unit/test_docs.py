"""The README and the docs pages as a reader meets them: a short README that links every page,
links that resolve, and the examples the live tests run (collected here from every page).

The live tier runs what this module collects (tests/integration/test_readme.py):
- every line of a fenced ``bash`` block that ends ``# -> <status>``, run as written;
- every row of an error table (``| type | status | Content-Type | example body | message |``);
- every ``json`` block after an ``<!-- answer: NAME -->`` line, compared with the live answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
README = REPO / "README.md"
CHANGELOG = REPO / "CHANGELOG.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
EXAMPLE_PAGES = [README, *DOCS]  # where runnable examples live
LINKED_PAGES = [README, CHANGELOG, *DOCS]  # whose relative links must resolve
README_MAX_LINES = 160

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
MARKED = re.compile(r"# -> (\d{3})$")
ANSWER = re.compile(r"<!-- answer: ([\w-]+) -->\n```json\n(.*?)```", re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
ERROR_HEADER = "| type | status | Content-Type | example body | message |"
# curl lines that are not marked `# -> <status>`, each with why it is not run by the live tier
UNMARKED_CURL = {
    ("README.md", "-d @artifacts/example-request.json"): "tests/e2e/test_makefile.py runs it through make serve-bg",
    ("docs/deployment.md", "-d @artifacts/example-request.json"): "the compose stack: tests/container",
    ("docs/performance.md", "curl -X DELETE"): "changes the server: tests/integration/test_batch_delay.py",
    ("docs/performance.md", "max_batch_delay=0"): "changes the server: tests/integration/test_batch_delay.py",
}


def rel(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


def blocks(page: Path, lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(page.read_text()) if kind == lang]


def runnable_examples() -> list[tuple[str, str]]:
    """(page, line) for every line of a bash block that ends ``# -> <status>``."""
    return [
        (rel(page), line)
        for page in EXAMPLE_PAGES
        for body in blocks(page, "bash")
        for line in body.splitlines()
        if MARKED.search(line)
    ]


def error_rows() -> list[tuple[str, list[str]]]:
    """(page, [type, status, content type, body, message]) for every row of an error table."""
    rows = []
    for page in EXAMPLE_PAGES:
        in_table = False
        for line in page.read_text().splitlines():
            if line.strip() == ERROR_HEADER:
                in_table = True
            elif in_table and not line.startswith("|"):
                in_table = False
            elif in_table and line.startswith("| `"):
                cells = line.split(" | ")
                if len(cells) == 5 and cells[3].startswith("`"):
                    rows.append((rel(page), [c.strip().strip("|").strip().strip("`") for c in cells]))
    return rows


def answer_blocks() -> dict[str, tuple[str, dict]]:
    """NAME -> (page, the shown answer) for every json block marked ``<!-- answer: NAME -->``
    (``, ...`` elisions removed)."""
    found: dict[str, tuple[str, dict]] = {}
    for page in EXAMPLE_PAGES:
        for name, body in ANSWER.findall(page.read_text()):
            assert name not in found, f"answer {name!r} shown twice: {found[name][0]} and {rel(page)}"
            found[name] = (rel(page), json.loads(re.sub(r",\s*\.\.\.", "", body)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # a link inside code is not a link
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference to docs/ (at most {README_MAX_LINES})"


def test_the_readme_links_every_docs_page_and_each_exists():
    linked = {(README.parent / t.split("#")[0]).resolve() for t in relative_links(README)}
    for page in DOCS:
        assert page.resolve() in linked, f"README.md does not link {rel(page)}"
    for target in linked:
        assert target.exists(), f"README.md links {target}, which does not exist"


def test_every_relative_link_resolves():
    broken = []
    for page in LINKED_PAGES:
        for target in relative_links(page):
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{rel(page)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{rel(page)}: {target} (no heading #{anchor} in {dest.name})")
    assert not broken, "\n".join(broken)


def test_link_checks_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n[ok](page.md#a-page) [gone](missing.md) [bad anchor](page.md#nope)\n")
    assert relative_links(page) == ["page.md#a-page", "missing.md", "page.md#nope"]
    assert "a-page" in anchors(page) and "nope" not in anchors(page)
    assert slug("Upstream status, and why this stack is pinned") == "upstream-status-and-why-this-stack-is-pinned"


def test_the_pages_hold_the_examples_the_live_tier_runs():
    examples = runnable_examples()
    assert len(examples) >= 9, examples
    assert {page for page, _ in examples} >= {"docs/api.md", "docs/explanations.md"}
    assert len(error_rows()) >= 14
    assert set(answer_blocks()) == {"example-request", "one-row", "explain-one-row"}


def test_every_curl_example_is_run_or_says_where_it_is_tested():
    unmarked = []
    for page in EXAMPLE_PAGES:
        for body in blocks(page, "bash"):
            for line in body.splitlines():
                if "curl " in line and not MARKED.search(line):
                    if not any(rel(page) == p and s in line for p, s in UNMARKED_CURL):
                        unmarked.append(f"{rel(page)}: {line}")
    assert not unmarked, "mark these `# -> <status>` (the live tier runs them) or list them in UNMARKED_CURL:\n" + "\n".join(unmarked)
