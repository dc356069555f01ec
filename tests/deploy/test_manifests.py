"""Every manifest, and every kustomize build, validates offline against the Kubernetes
schemas in strict mode (unknown fields are errors), for the oldest Kubernetes we support and
the newest one kubernetes-validate knows. Custom resources (the RabbitMQ Cluster Operator's
RabbitmqCluster) validate against tests/deploy/custom_resources.py; any other kind that
kubernetes-validate does not know fails."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy import custom_resources
from tests.deploy.k8s_objects import (
    K8S,
    NAMESPACE,
    OVERLAYS,
    Obj,
    is_kustomization,
    render,
    yaml_files,
)
from tests.deploy.kustomize import CLUSTER_SCOPED, load_documents

OLDEST_SUPPORTED = "1.29"  # HPA autoscaling/v2, PDB policy/v1, Job podFailurePolicy...
VERSIONS = sorted({OLDEST_SUPPORTED, kubernetes_validate.latest_version()})


def _validate(doc: Obj, where: str) -> None:
    for version in VERSIONS:
        if custom_resources.is_custom(doc):
            try:
                custom_resources.validate(doc, version)
            except jsonschema.ValidationError as exc:
                path = "/".join(str(p) for p in exc.absolute_path)
                pytest.fail(f"{where}: invalid for Kubernetes {version} at {path}: {exc.message}")
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{where}: invalid for Kubernetes {version} at {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: {exc.message}")


MANIFEST_FILES = [p for p in yaml_files() if not is_kustomization(p)]


def test_there_are_manifests() -> None:
    assert len(MANIFEST_FILES) >= 8
    assert [p for p in yaml_files() if is_kustomization(p)], "no kustomization.yaml found"


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_every_document_validates_strictly(path: Path) -> None:
    docs = load_documents(path)
    assert docs, f"{path} has no documents"
    for index, doc in enumerate(docs):
        _validate(doc, f"{path.relative_to(K8S)}[{index}] {doc.get('kind')}")


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: str(p.relative_to(K8S)))
def test_kustomize_build_validates_strictly(overlay: Path) -> None:
    objects = render(overlay)
    assert objects
    for obj in objects:
        _validate(obj, f"build {overlay.relative_to(K8S)}: {obj['kind']}/{obj['metadata']['name']}")


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: str(p.relative_to(K8S)))
def test_build_is_namespaced_and_labelled(overlay: Path) -> None:
    for obj in render(overlay):
        meta = obj["metadata"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        else:
            assert meta.get("namespace") == NAMESPACE, f"{obj['kind']}/{meta['name']}"
        assert meta.get("labels"), f"{obj['kind']}/{meta['name']} has no labels"
