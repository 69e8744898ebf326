"""The README and docs/ point only inside the repo, and what they name exists.

Every relative link and anchor in README.md and docs/*.md must resolve to a file (and heading) in the
repo; no link may leave it. Code spans that name a repo path, a `python -m` module or a dotted
`pipeline.` / `stages.` name must name something that exists, and the paper-to-code map's functions must
be defined in the modules it names. Pure text and AST parsing: nothing is imported or run.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "outputs" / "README.md"]
README_MAX_LINES = 150

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)")
AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")
HTML_ATTR = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# Text that points at material outside the repo.
OUTSIDE = re.compile(r"\bnotes/[\w-]+\.md|\bCONTEXT\.md|\bissue[- ]?#?\d+|/work/|\bclosing note\b", re.I)
REPO_DIRS = ("conf/", "pipeline/", "stages/", "tests/", "benchmarks/", "docs/", ".ci/", ".dvc/")
PLACEHOLDER = re.compile(r"[<>*$\s{}…]")


def _lines_outside_fences(text: str) -> list[tuple[int, str]]:
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, line))
    return out


def _fenced_lines(text: str) -> list[tuple[int, str]]:
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            out.append((n, line))
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link outside code: inline, image, reference, autolink, HTML href/src."""
    found = []
    for n, line in _lines_outside_fences(path.read_text(encoding="utf-8")):
        prose = CODE_SPAN.sub("", line)
        for rx in (INLINE_LINK, REF_DEF, AUTOLINK, HTML_ATTR):
            for m in rx.finditer(prose):
                found.append((n, m.group(1).strip("<>")))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: rendered text, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links -> their text
    text = text.replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(c for c in text if c.isalnum() or c in "-_ " or unicodedata.category(c).startswith("M"))
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in _lines_outside_fences(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.add(base if k == 0 else f"{base}-{k}")
    return frozenset(out)


def check_target(page: Path, target: str) -> str | None:
    """None if the link resolves inside the repo, else why not."""
    if not target:
        return "empty link"
    if target.startswith("//") or SCHEME.match(target):
        return "points outside the repo (absolute URL)"
    if target.startswith("/"):
        return "absolute path (outside the repo)"
    rel, _, anchor = target.partition("#")
    dest = (page.parent / rel).resolve() if rel else page.resolve()
    if ROOT.resolve() not in (dest, *dest.parents):
        return "leaves the repo"
    if not dest.exists():
        return f"{dest.relative_to(ROOT.resolve())} does not exist"
    if anchor:
        if dest.suffix != ".md":
            return "anchor into a non-Markdown file cannot be checked"
        if anchor not in anchors(dest):
            return f"no heading #{anchor} in {dest.relative_to(ROOT.resolve())}"
    return None


def test_the_checker_rejects_what_it_must():
    # the checks themselves can fail: an outside URL, an absolute path, an escape, a missing file or heading
    assert check_target(README, "https://example.org/x") is not None
    assert check_target(README, "file:///etc/passwd") is not None
    assert check_target(README, "/etc/passwd") is not None
    assert check_target(README, "../README.md") is not None
    assert check_target(README, "docs/no-such-page.md") is not None
    assert check_target(README, "#no-such-heading") is not None
    assert check_target(README, "pyproject.toml#anchor") is not None
    assert check_target(README, "pyproject.toml") is None
    assert slug("Models (`model=...`)") == "models-model"
    assert slug("patches.csv: one row per (seed, t, k)") == "patchescsv-one-row-per-seed-t-k"
    assert OUTSIDE.search("see the issue-9 closing note") and OUTSIDE.search("notes/geometry.md")
    assert not dotted_exists("pipeline.geometry.no_such_function")
    assert dotted_exists("pipeline.geometry.default_geometry_rows")
    assert not path_exists("tests/test_sampler.py::test_no_such_test")


def test_docs_exist_and_readme_is_short():
    assert DOCS, "docs/ has no pages"
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, (
        f"README.md has {n} lines (at most {README_MAX_LINES}); move reference to docs/"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repo(page):
    bad = [f"{page.name}:{n}: {t} — {why}" for n, t in links(page) if (why := check_target(page, t))]
    assert not bad, "\n".join(bad)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        (README.parent / t.partition("#")[0]).resolve() for _, t in links(README) if not SCHEME.match(t)
    }
    missing = [p.name for p in DOCS if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_to_material_outside_the_repo(page):
    text = page.read_text(encoding="utf-8")
    bad = [f"{page.name}:{n}: {m.group(0)!r}" for n, line in enumerate(text.splitlines(), 1)
           for m in OUTSIDE.finditer(line)]  # fmt: skip
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------ names in code spans and commands
@cache
def module_file(dotted: str) -> Path | None:
    base = ROOT / Path(*dotted.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py", base / "__main__.py"):
        if cand.is_file():
            return cand
    return None


@cache
def top_level(path: Path) -> dict[str, ast.AST]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names[t.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            for a in node.names:
                names[(a.asname or a.name).split(".")[0]] = node
    return names


def defines(path: Path, attrs: list[str]) -> bool:
    """Whether ``path`` defines attrs[0] (and, for a class, the member attrs[1])."""
    node = top_level(path).get(attrs[0])
    if node is None:
        return False
    if len(attrs) == 1:
        return True
    if not isinstance(node, ast.ClassDef) or len(attrs) > 2:
        return False
    members = set()
    for n in node.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            members.add(n.name)
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            members.add(n.target.id)
        elif isinstance(n, ast.Assign):
            members.update(t.id for t in n.targets if isinstance(t, ast.Name))
    return attrs[1] in members


def dotted_exists(dotted: str) -> bool:
    """pipeline.a.b[.name[.member]]: the longest module prefix exists and defines the rest."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        f = module_file(".".join(parts[:i]))
        if f is not None:
            return i == len(parts) or defines(f, parts[i:])
    return False


def path_exists(token: str) -> bool:
    """A repo path in a code span; `file.py::test_name` must also define that test."""
    rel, _, test = token.partition("::")
    p = ROOT / rel
    if not p.exists():
        return False
    return not test or (p.suffix == ".py" and defines(p, [test]))


def code_tokens(page: Path) -> list[tuple[int, str]]:
    out = []
    text = page.read_text(encoding="utf-8")
    for n, line in _lines_outside_fences(text):
        out += [(n, m.group(2).strip()) for m in CODE_SPAN.finditer(line)]
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_paths_modules_and_functions_exist(page):
    text = page.read_text(encoding="utf-8")
    bad = []
    for n, tok in code_tokens(page):
        if tok.startswith(REPO_DIRS) and not PLACEHOLDER.search(tok):
            if not path_exists(tok):
                bad.append(f"{page.name}:{n}: path {tok}")
        m = re.fullmatch(r"((?:pipeline|stages|benchmarks)(?:\.\w+)+)(?:\(.*\))?", tok)
        if m and not dotted_exists(m.group(1)):
            bad.append(f"{page.name}:{n}: name {m.group(1)}")
    everywhere = _lines_outside_fences(text) + _fenced_lines(text)
    for n, line in everywhere:
        for m in re.finditer(r"python3? -m ((?:pipeline|stages|benchmarks)(?:\.\w+)*)\b(?![.$<])", line):
            if module_file(m.group(1)) is None:
                bad.append(f"{page.name}:{n}: module {m.group(1)}")
    assert not bad, "\n".join(bad)


def paper_map() -> list[tuple[str, list[str]]]:
    """(module path, names) of each row of the README's paper-to-code table."""
    rows = []
    for line in README.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|") or "·" not in line:
            continue
        cell = line.rstrip("|").split("|")[-1]
        if "`" not in cell:  # the header row
            continue
        module, _, names = cell.partition("·")
        mod = re.search(r"`([^`]+\.py)`", module)
        assert mod, f"no module in the map row {line!r}"
        rows.append((mod.group(1), re.findall(r"`([^`]+)`", names)))
    return rows


def test_paper_map_names_are_defined_where_the_map_says():
    rows = paper_map()
    assert len(rows) >= 20, "the README's paper-to-code map is missing"
    bad = []
    for module, names in rows:
        path = ROOT / module
        if not path.is_file():
            bad.append(f"{module}: no such file")
            continue
        cls = None
        for name in names:
            attrs = [cls, name[1:]] if name.startswith(".") else name.split(".")
            if not defines(path, attrs):
                bad.append(f"{module}: {name}")
            cls = attrs[0]
    assert not bad, "the README's paper-to-code map names what is not there:\n" + "\n".join(bad)
