"""A tiny, offline `kustomize build` for exactly the features deploy/k8s uses.

There is no kustomize binary in the test environment, so this renders a kustomization the
way `kubectl kustomize` would for the subset below, and refuses anything else (an unknown
field raises :class:`UnsupportedFeature`, so adding a feature to a kustomization.yaml makes
the tests fail loudly until this file learns it).

Supported kustomization fields:
- ``resources``: files (multi-document YAML) and directories holding a kustomization.yaml
  (built recursively, their own transformers applied first, as kustomize does);
- ``patches``: entries with only ``path``; each document in the file is a strategic-merge
  patch applied to the resource with the same kind and metadata.name (namespace ignored:
  kustomize also matches a resource by the id it had before a namespace was set);
- ``namespace``: set on every namespaced resource;
- ``labels``: ``pairs`` added to metadata.labels, and to pod template labels when
  ``includeTemplates`` is true (``includeSelectors`` must be false);
- ``replicas``: ``name`` + ``count`` set spec.replicas of that Deployment/StatefulSet;
- ``images``: ``name`` + ``newName``/``newTag``/``digest`` rewrite matching container images.

Transformers run in kustomize's order: patches, namespace, labels, replicas, images.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "patches",
    "namespace",
    "labels",
    "replicas",
    "images",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "IngressClass",
    "PersistentVolume",
    "PriorityClass",
    "StorageClass",
}
# Kinds whose spec.template is a pod template (labels.includeTemplates, images).
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
REPLICA_KINDS = {"Deployment", "StatefulSet", "ReplicaSet"}
# patchMergeKey of the lists we may patch (everything else is replaced, as in Kubernetes).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}


class UnsupportedFeature(ValueError):
    """The kustomization uses something this renderer does not implement."""


def find_kustomization(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"no kustomization.yaml in {directory}")


def load_documents(path: Path) -> list[Obj]:
    """Every non-empty YAML document of a file."""
    with path.open(encoding="utf-8") as fh:
        docs = [doc for doc in yaml.safe_load_all(fh) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: a document is not a mapping")
    return docs


def build(directory: Path) -> list[Obj]:
    """Render the kustomization in ``directory``; returns the resources in input order."""
    directory = Path(directory)
    spec = yaml.safe_load(find_kustomization(directory).read_text(encoding="utf-8")) or {}
    unknown = set(spec) - SUPPORTED_FIELDS
    if unknown:
        raise UnsupportedFeature(f"{directory}: unsupported kustomization fields {sorted(unknown)}")

    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        objects.extend(build(target) if target.is_dir() else load_documents(target))
    _check_unique(objects, directory)

    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise UnsupportedFeature(f"{directory}: only `patches: - path:` is supported")
        for doc in load_documents(directory / patch["path"]):
            strategic_merge(_find(objects, doc), doc)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    for entry in spec.get("labels", []):
        _apply_labels(objects, entry)
    for entry in spec.get("replicas", []):
        _apply_replicas(objects, entry)
    for entry in spec.get("images", []):
        _apply_image(objects, entry)
    return objects


def _key(obj: Obj) -> tuple[str, str, str]:
    meta = obj.get("metadata", {})
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def _check_unique(objects: Iterable[Obj], where: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        key = _key(obj)
        if key in seen:
            raise ValueError(f"{where}: duplicate resource {key}")
        seen.add(key)


def _find(objects: list[Obj], patch: Obj) -> Obj:
    kind, name = patch["kind"], patch["metadata"]["name"]
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(matches) != 1:
        raise ValueError(f"patch {kind}/{name} matches {len(matches)} resources, not 1")
    if matches[0]["apiVersion"].split("/")[0] != patch["apiVersion"].split("/")[0]:
        raise ValueError(f"patch {kind}/{name}: apiVersion group differs from the resource")
    return matches[0]


def strategic_merge(target: Obj, patch: Obj) -> None:
    """Merge ``patch`` into ``target`` in place (Kubernetes strategic-merge semantics for
    maps, ``null`` deletions and the lists in MERGE_KEYS; other lists are replaced)."""
    for key, value in patch.items():
        if key.startswith("$"):
            raise UnsupportedFeature(f"patch directive {key} is not supported")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            strategic_merge(target[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(target.get(key), list):
            _merge_list(target[key], value, MERGE_KEYS[key])
        else:
            target[key] = copy.deepcopy(value)


def _merge_list(target: list[Obj], patch: list[Obj], merge_key: str) -> None:
    for item in patch:
        existing = [t for t in target if t.get(merge_key) == item.get(merge_key)]
        if existing:
            strategic_merge(existing[0], item)
        else:
            target.append(copy.deepcopy(item))


def pod_templates(obj: Obj) -> list[Obj]:
    if obj["kind"] in POD_TEMPLATE_KINDS:
        return [obj["spec"]["template"]]
    return []


def _apply_labels(objects: list[Obj], entry: Obj) -> None:
    if set(entry) - {"pairs", "includeSelectors", "includeTemplates"}:
        raise UnsupportedFeature(f"labels entry {entry}: unsupported keys")
    if entry.get("includeSelectors", False):
        raise UnsupportedFeature("labels.includeSelectors: true is not supported")
    pairs = {str(k): str(v) for k, v in entry["pairs"].items()}
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        if entry.get("includeTemplates", False):
            for template in pod_templates(obj):
                template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _apply_replicas(objects: list[Obj], entry: Obj) -> None:
    matches = [
        o for o in objects if o["kind"] in REPLICA_KINDS and o["metadata"]["name"] == entry["name"]
    ]
    if not matches:
        raise ValueError(f"replicas: no workload named {entry['name']}")
    for obj in matches:
        obj["spec"]["replicas"] = int(entry["count"])


def image_name(image: str) -> str:
    """`registry:5000/app:tag@sha256:..` -> `registry:5000/app`."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return image[: len(image) - len(last.split(":", 1)[1]) - 1] if ":" in last else image


def _apply_image(objects: list[Obj], entry: Obj) -> None:
    if set(entry) - {"name", "newName", "newTag", "digest"}:
        raise UnsupportedFeature(f"images entry {entry}: unsupported keys")
    for obj in objects:
        for template in pod_templates(obj):
            pod = template["spec"]
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                image = container["image"]
                name = image_name(image)
                if name != entry["name"]:
                    continue
                rest = image[len(name) :]
                new = entry.get("newName", name)
                if "digest" in entry:
                    container["image"] = f"{new}@{entry['digest']}"
                elif "newTag" in entry:
                    container["image"] = f"{new}:{entry['newTag']}"
                else:
                    container["image"] = new + rest
