"""docs/DEPLOY.md agrees with the manifests: the broker addresses it shows are the production
RabbitMQ cluster's, and the sections the manifests' comments and the guide's own links point
at exist."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from tests.deploy.k8s_objects import DEPLOY_MD, K8S, NAMESPACE, PRODUCTION, Obj, render


def _text() -> str:
    return DEPLOY_MD.read_text(encoding="utf-8")


def _cluster() -> Obj:
    (cluster,) = [o for o in render(PRODUCTION) if o["kind"] == "RabbitmqCluster"]
    return cluster


def _hosts(urls: str) -> list[str]:
    """The hosts of a comma-separated list of amqp:// URLs (each checked on the way)."""
    hosts = []
    for url in urls.split(","):
        parts = urlsplit(url)
        assert parts.scheme == "amqp", url
        assert parts.port == 5672, url
        assert parts.path.strip("/"), f"{url}: no vhost"
        assert parts.hostname
        hosts.append(parts.hostname)
    return hosts


def test_the_secret_command_points_at_the_production_cluster() -> None:
    """The operator names the client Service after the cluster: <name>.<namespace>.svc."""
    found = re.findall(r"--from-literal=CHAT_BROKER_URL='([^']+)'", _text())
    assert found, "DEPLOY.md shows no CHAT_BROKER_URL for the Secret"
    name = _cluster()["metadata"]["name"]
    for urls in found:
        assert _hosts(urls) == [f"{name}.{NAMESPACE}.svc"], urls


def test_the_listed_nodes_are_the_clusters_pods() -> None:
    """The operator's pods are <name>-server-<i>, under the headless Service <name>-nodes."""
    cluster = _cluster()
    name, replicas = cluster["metadata"]["name"], cluster["spec"]["replicas"]
    lists = [u for u in re.findall(r"`(amqp://[^`]+)`", _text()) if "," in u]
    assert lists, "DEPLOY.md shows no CHAT_BROKER_URL listing the nodes"
    expected = [f"{name}-server-{i}.{name}-nodes.{NAMESPACE}.svc" for i in range(replicas)]
    for urls in lists:
        assert _hosts(urls) == expected, urls


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _headings() -> list[str]:
    return re.findall(r"^#{2,4} (.+)$", _text(), flags=re.M)


def test_links_inside_the_guide_resolve() -> None:
    anchors = {_slug(h) for h in _headings()}
    links = re.findall(r"\]\(#([^)]+)\)", _text())
    assert links
    assert not [link for link in links if link not in anchors]


def test_sections_named_in_the_manifests_exist() -> None:
    """Comments in deploy/k8s say `docs/DEPLOY.md, "Some section"`: that heading exists."""
    headings = _headings()
    named = []
    for path in sorted(K8S.rglob("*.yaml")):
        text = re.sub(r"\n\s*#\s*", " ", path.read_text(encoding="utf-8"))
        named += re.findall(r'docs/DEPLOY\.md, "([^"]+)"', text)
    assert named
    missing = [n for n in named if not any(n in h for h in headings)]
    assert not missing, f"no such section in DEPLOY.md: {missing}"
