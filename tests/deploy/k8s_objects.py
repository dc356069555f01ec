"""Shared helpers for the deploy tests: where things are, rendered overlays, env resolution."""

from __future__ import annotations

import base64
import copy
import functools
import re
from pathlib import Path
from typing import Any

from tests.deploy import kustomize

Obj = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
DEV = K8S / "overlays" / "dev"
PRODUCTION = K8S / "overlays" / "production"
# The base and every overlay: any overlay added later is rendered and validated too.
OVERLAYS = [BASE, *sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())]
DOCKERFILE = REPO / "Dockerfile"
SETTINGS = REPO / "services" / "common" / "settings.py"
DEPLOY_MD = REPO / "docs" / "DEPLOY.md"
NAMESPACE = "chat"

# API.md: "Path prefixes decide which service answers".
API_ROUTES = {
    "/api/auth": "auth",
    "/api/users": "auth",
    "/api/rooms": "auth",
    "/api/history": "history",
    "/api/search": "history",
    "/ws": "gateway",
    "/api/presence": "gateway",
    "/": "gateway",  # the static web client, served by the gateway in the scaled mode
}
SERVICES = ("auth", "gateway", "history")
TARGETS = ("all", "auth", "gateway", "history", "migrate")


@functools.cache
def _render(directory: Path) -> tuple[Obj, ...]:
    return tuple(kustomize.build(directory))


def render(directory: Path) -> list[Obj]:
    """`kustomize build directory` (a fresh deep copy each call)."""
    return copy.deepcopy(list(_render(directory)))


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


def is_kustomization(path: Path) -> bool:
    return path.name in kustomize.KUSTOMIZATION_FILES


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def the_container(workload: Obj) -> Obj:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: expected one container"
    container: Obj = containers[0]
    return container


def settings_env_names() -> set[str]:
    """Every CHAT_* variable services/common/settings.py reads."""
    return set(re.findall(r"\"(CHAT_[A-Z0-9_]+)\"", SETTINGS.read_text(encoding="utf-8")))


def _data(obj: Obj) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    values.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    return values


def config_values(objects: list[Obj], kind: str, name: str) -> dict[str, str]:
    """The key/values of a rendered ConfigMap or Secret."""
    obj = find(objects, kind, name)
    if kind == "ConfigMap":
        return {k: str(v) for k, v in (obj.get("data") or {}).items()}
    return _data(obj)


def resolve_env(container: Obj, objects: list[Obj], pod_name: str) -> dict[str, str]:
    """The environment Kubernetes gives ``container``: envFrom first, then env (which wins);
    ConfigMap/Secret references looked up in ``objects``; the downward API's metadata.name
    becomes ``pod_name``. A missing non-optional reference fails, as the kubelet would."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key in source:
                ref = source[key]
                try:
                    values = config_values(objects, kind, ref["name"])
                except AssertionError:
                    if ref.get("optional"):
                        continue
                    raise
                env.update({prefix + k: v for k, v in values.items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {"metadata.name": pod_name, "metadata.namespace": NAMESPACE}
            assert path in fields, f"unsupported downward API field {path}"
            env[item["name"]] = fields[path]
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            kind = "ConfigMap" if "configMapKeyRef" in source else "Secret"
            ref = source["configMapKeyRef" if kind == "ConfigMap" else "secretKeyRef"]
            values = config_values(objects, kind, ref["name"])
            assert ref["key"] in values, f"{kind}/{ref['name']} has no key {ref['key']}"
            env[item["name"]] = values[ref["key"]]
        else:
            raise AssertionError(f"unsupported valueFrom {source}")
    return env


def container_port(container: Obj, port: int | str) -> int:
    """A probe's port (a number or a named container port) as a number."""
    if isinstance(port, int):
        return port
    for item in container.get("ports", []):
        if item.get("name") == port:
            return int(item["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port}")
