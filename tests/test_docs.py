"""The project's documents hold: every relative link in README.md, docs/ and every other Markdown
file of the repository resolves inside it (to a tracked file, and to a heading where it names
one)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

from services.common.settings import ROOT

DOCS = sorted(
    p
    for p in ROOT.rglob("*.md")
    if not any(
        part.startswith(".") or part in ("var", "build") for part in p.relative_to(ROOT).parts
    )
)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)


# links -------------------------------------------------------------------------------------
def _unfenced(text: str) -> str:
    """The Markdown without its fenced code blocks."""
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)


def _prose(text: str) -> str:
    """The Markdown without code blocks and inline code (links there are not links)."""
    return re.sub(r"(`+)[^`].*?\1", "", _unfenced(text), flags=re.S)


def links(text: str) -> list[str]:
    prose = _prose(text)
    return LINK.findall(prose) + REF_LINK.findall(prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    heading = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _unfenced(path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def tracked() -> set[str] | None:
    """The files of the repository: tracked, or new and not ignored (outside a git checkout,
    None: then whatever exists counts). A link into var/ or .venv/ resolves for nobody else."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {p for p in out.decode().split("\0") if p}


def broken_links(doc: Path, text: str, files: set[str] | None) -> list[str]:
    """The links of ``text`` (the document ``doc``) that do not resolve, each with why."""
    problems = []
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        raw, _, fragment = target.partition("#")
        path = (doc.parent / unquote(raw)).resolve() if raw else doc
        where = f"{doc.relative_to(ROOT)}: {target}"
        if not path.is_relative_to(ROOT):
            problems.append(f"{where} (outside the repository)")
            continue
        rel = path.relative_to(ROOT).as_posix()
        if files is not None:
            exists = rel in files or any(f.startswith(rel + "/") for f in files)
        else:
            exists = path.exists()
        if not exists:
            problems.append(f"{where} (no such file in the repository)")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            problems.append(f"{where} (no heading #{fragment} in {rel})")
    return problems


def test_every_relative_link_in_the_docs_resolves() -> None:
    assert {ROOT / "README.md", ROOT / "docs" / "API.md", ROOT / "web" / "README.md"} <= set(DOCS)
    files = tracked()
    problems = [p for doc in DOCS for p in broken_links(doc, doc.read_text("utf-8"), files)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_check_finds_broken_links() -> None:
    """The check above can fail: a document (never written to disk) with one link of each
    broken kind, and links that are fine or are not links."""
    doc = ROOT / "docs" / "a-document-that-is-not-there.md"
    text = (
        "# Title\n[ok](API.md) [ok too](API.md#conventions) [web](https://example.org/x)\n"
        "[gone](no-such-file.md) [out](../../shared/API.md) [anchor](API.md#no-such-heading)\n"
        "```\n[in code](ignored.md)\n```\n`[inline](ignored-too.md)`\n[ref]: missing-ref.md\n"
    )
    problems = broken_links(doc, text, tracked())
    assert [p.split(": ", 1)[1].split(" (")[0] for p in problems] == [
        "no-such-file.md",
        "../../shared/API.md",
        "API.md#no-such-heading",
        "missing-ref.md",
    ], problems


def test_slugs_are_githubs() -> None:
    assert slug("WebSocket (gateway): `GET /ws`") == "websocket-gateway-get-ws"
    assert slug("Not yet built (planned, v1.1)") == "not-yet-built-planned-v11"
    assert slug("Resuming after any disconnect (no gap, no duplicate)") == (
        "resuming-after-any-disconnect-no-gap-no-duplicate"
    )
