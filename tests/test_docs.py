"""The project's documents hold: every relative link in README.md, docs/ and every other Markdown
file of the repository resolves inside it (to a tracked file, and to a heading where it names one), and the OpenAPI document
lists exactly the REST calls the all-in-one app serves (every path and method in it is served;
every served REST path and method is in it)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import yaml
from flask import Flask
from starlette.applications import Starlette
from starlette.routing import Route

from services.auth import OPENAPI_FILE
from services.common.settings import ROOT, Settings
from tests.support.inprocess import build_app

DOCS = sorted(
    p
    for p in ROOT.rglob("*.md")
    if not any(
        part.startswith(".") or part in ("var", "build") for part in p.relative_to(ROOT).parts
    )
)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
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


# the OpenAPI document vs what is served ----------------------------------------------------
def openapi_operations() -> set[tuple[str, str]]:
    doc = yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8"))
    return {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method.upper() in METHODS
    }


@pytest.fixture(scope="module")
def allinone_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Starlette, Flask]]:
    """The all-in-one app built in-process (services.app.create_app, target `all`), and the
    Flask auth app as the auth target serves it (services.auth.create_app)."""
    from services.auth import create_app as create_auth_app

    url = f"sqlite:///{tmp_path_factory.mktemp('docs') / 'chat.db'}"
    settings = Settings(
        target="all",
        database_url=url,
        broker_url="memory://",
        jwt_secret="docs-test-" + "x" * 40,
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        log_json=False,
    )
    app = build_app(settings)
    yield app, create_auth_app(settings)
    app.state.engine.dispose()


def _sample(path: str) -> str:
    """A concrete URL for an OpenAPI or route path: each {parameter} filled in."""
    return re.sub(r"\{[^}]+\}", "a" * 26, path)


def _routing_miss(response: httpx.Response) -> bool:
    """Whether the answer is the router's: no such path (404 not_found) or method (405)."""
    if response.status_code == 405:
        return True
    if response.status_code != 404:
        return False
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return True  # not our JSON error: the static files' 404
    return bool(code == "not_found")


async def _misses(app: Starlette, operations: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The operations the all-in-one ASGI app (auth prefix dispatch included) does not serve."""
    transport = httpx.ASGITransport(app=app.state.asgi)
    missed = set()
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for path, method in sorted(operations):
            body = {} if method in ("POST", "PUT", "PATCH") else None
            r = await client.request(method, _sample(path), json=body)
            if _routing_miss(r):
                missed.add((path, method))
    return missed


def _flask_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


async def served_operations(app: Starlette, flask_app: Flask) -> set[tuple[str, str]]:
    """Every REST path and method served: the auth app's url_map, and the Starlette routes
    (gateway, history, operations) less the methods a route answers with 405."""
    served = {
        (_flask_path(rule.rule), method)
        for rule in flask_app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method in METHODS
    }
    routes = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method in METHODS
    }
    return served | (routes - await _misses(app, routes))


@pytest.mark.anyio
async def test_openapi_lists_exactly_what_is_served(
    allinone_app: tuple[Starlette, Flask],
) -> None:
    app, flask_app = allinone_app
    documented = openapi_operations()
    served = await served_operations(app, flask_app)
    for expected in [
        ("/api/auth/login", "POST"),
        ("/api/rooms/{room_id}/members/{username}", "DELETE"),
        ("/api/history/{room_id}", "GET"),
        ("/api/presence", "GET"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
        ("/metrics", "GET"),
    ]:
        assert expected in served  # the enumeration itself sees every service
    assert ("/api/history/{room_id}", "POST") not in served  # a JSON 405 is not "served"
    assert not documented - served, f"in the OpenAPI, not served: {documented - served}"
    assert not served - documented, f"served, not in the OpenAPI: {served - documented}"
    assert not await _misses(app, documented), "documented, but the all-in-one app misses it"


@pytest.mark.anyio
async def test_the_served_check_sees_a_path_that_is_not_there(
    allinone_app: tuple[Starlette, Flask],
) -> None:
    app, _ = allinone_app
    ghost = {("/api/rooms/{room_id}/archive", "POST"), ("/api/presence", "DELETE")}
    assert await _misses(app, ghost | {("/api/presence", "GET")}) == ghost


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
