"""The offline kustomize renderer does what kustomize does for the features we use."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.k8s_objects import BASE, DEV, config_values, find, of_kind, render
from tests.deploy.kustomize import UnsupportedFeature, build, image_name, strategic_merge


def _write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: registry.local:5000/web:1.0
          args: ["a", "b"]
          env: [{name: A, value: "1"}, {name: B, value: "2"}]
        - name: sidecar
          image: busybox:1.36
"""


def test_overlay_with_every_supported_feature(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "base/kustomization.yaml": "resources: [web.yaml]\nnamespace: one\n",
            "base/web.yaml": DEPLOYMENT,
            "dev/kustomization.yaml": (
                "namespace: two\n"
                "resources: [../base]\n"
                "patches: [{path: patch.yaml}]\n"
                "labels: [{pairs: {tier: x}, includeTemplates: true}]\n"
                "replicas: [{name: web, count: 1}]\n"
                "images: [{name: registry.local:5000/web, newTag: '2.0'}]\n"
            ),
            "dev/patch.yaml": (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
                "spec:\n  template:\n    spec:\n      containers:\n"
                "        - name: web\n          args: [c]\n"
                "          env: [{name: B, value: '3'}, {name: C, value: '4'}]\n"
            ),
        },
    )
    (web,) = build(tmp_path / "dev")
    assert web["metadata"]["namespace"] == "two"
    assert web["metadata"]["labels"] == {"tier": "x"}
    assert web["spec"]["template"]["metadata"]["labels"] == {"app": "web", "tier": "x"}
    assert web["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert web["spec"]["replicas"] == 1
    main, sidecar = web["spec"]["template"]["spec"]["containers"]
    assert main["image"] == "registry.local:5000/web:2.0"
    assert sidecar["image"] == "busybox:1.36"
    assert main["args"] == ["c"]  # plain lists are replaced
    assert main["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]


def test_unknown_fields_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, {"kustomization.yaml": "resources: []\nnamePrefix: x-\n"})
    with pytest.raises(UnsupportedFeature):
        build(tmp_path)


def test_patch_must_match_exactly_one_resource(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "kustomization.yaml": "resources: [web.yaml]\npatches: [{path: p.yaml}]\n",
            "web.yaml": DEPLOYMENT,
            "p.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nope}\n",
        },
    )
    with pytest.raises(ValueError, match="matches 0"):
        build(tmp_path)


def test_null_deletes_and_maps_merge() -> None:
    target = {"a": {"b": 1, "c": 2}, "d": 3}
    strategic_merge(target, {"a": {"c": None, "e": 5}, "d": None})
    assert target == {"a": {"b": 1, "e": 5}}


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("chat", "chat"),
        ("chat:dev", "chat"),
        ("registry:5000/team/chat:1.2", "registry:5000/team/chat"),
        ("registry:5000/chat", "registry:5000/chat"),
        ("chat@sha256:abc", "chat"),
    ],
)
def test_image_name(image: str, name: str) -> None:
    assert image_name(image) == name


def test_dev_overlay_applies_its_changes_to_the_base() -> None:
    base, dev = render(BASE), render(DEV)
    assert find(base, "Deployment", "auth")["spec"]["replicas"] == 2
    assert find(dev, "Deployment", "auth")["spec"]["replicas"] == 1
    assert find(dev, "Deployment", "history")["spec"]["replicas"] == 1
    assert find(base, "HorizontalPodAutoscaler", "gateway")["spec"]["minReplicas"] == 3
    hpa = find(dev, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 4)
    assert hpa["metrics"], "the patch must keep the base metrics"
    base_config = config_values(base, "ConfigMap", "chat-config")
    dev_config = config_values(dev, "ConfigMap", "chat-config")
    assert set(base_config) == set(dev_config)
    assert dev_config["CHAT_ALLOWED_ORIGINS"] != base_config["CHAT_ALLOWED_ORIGINS"]
    for workload in of_kind(dev, "Deployment") + of_kind(dev, "Job"):
        if workload["metadata"]["labels"].get("app.kubernetes.io/name") == "chat":
            for container in workload["spec"]["template"]["spec"]["containers"]:
                assert container["image"] == "chat:dev"
    assert of_kind(dev, "StatefulSet") and not of_kind(base, "StatefulSet")
