"""The RabbitmqCluster schema of custom_resources.py is as strict as kubernetes-validate's strict
mode: unknown or misspelt fields and wrong types fail, at any depth, including inside the
Kubernetes types the spec embeds."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from tests.deploy import custom_resources
from tests.deploy.k8s_objects import PRODUCTION, Obj, render
from tests.deploy.test_manifests import VERSIONS

MINIMAL: Obj = {
    "apiVersion": "rabbitmq.com/v1beta1",
    "kind": "RabbitmqCluster",
    "metadata": {"name": "rabbitmq", "namespace": "chat"},
    "spec": {"replicas": 3},
}


def _production_cluster() -> Obj:
    (cluster,) = [o for o in render(PRODUCTION) if o["kind"] == "RabbitmqCluster"]
    return cluster


@pytest.mark.parametrize("version", VERSIONS)
def test_valid_clusters_pass(version: str) -> None:
    custom_resources.validate(MINIMAL, version)
    custom_resources.validate(_production_cluster(), version)


def _broken(path: list[str], value: object) -> Obj:
    doc = _production_cluster()
    target = doc
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["spec", "replica"], 3),  # misspelt
        (["spec", "replicas"], "3"),  # a string
        (["spec", "replicas"], -1),
        (["spec", "service", "type"], "Ingress"),
        (["spec", "rabbitmq", "additionalConfig"], "x = y\n" * 400),  # over 2000 characters
        (["spec", "rabbitmq", "additionalPlugins"], ["rabbitmq-shovel"]),  # not \w+
        (["spec", "persistence", "size"], "20Gi"),
        (["spec", "affinity", "podAntiAffinity", "required"], []),  # inside a Kubernetes type
        (["spec", "resources", "requests", "cpu"], {"cores": 2}),
        (["spec", "override", "statefulSet", "spec", "template", "spec", "hostNetwrk"], True),
        (["metadata", "labels"], ["a"]),
    ],
    ids=lambda v: "/".join(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else "",
)
def test_mistakes_fail(path: list[str], value: object) -> None:
    doc = _broken(path, copy.deepcopy(value))
    for version in VERSIONS:
        with pytest.raises(jsonschema.ValidationError):
            custom_resources.validate(doc, version)


def test_only_known_kinds_are_custom() -> None:
    # any other kind goes to kubernetes-validate, which fails on kinds it does not know
    assert custom_resources.is_custom(MINIMAL)
    assert not custom_resources.is_custom({"apiVersion": "rabbitmq.com/v1beta1", "kind": "User"})
    assert not custom_resources.is_custom({"apiVersion": "apps/v1", "kind": "Deployment"})
