"""The production overlay: the base plus a 3-node RabbitMQ cluster (the RabbitMQ Cluster
Operator's RabbitmqCluster) that keeps a majority of every quorum queue's replicas through the
loss of a node or a drain, and pods the namespace's Pod Security admission accepts."""

from __future__ import annotations

import copy

from tests.deploy.k8s_objects import (
    BASE,
    DEV,
    PRODUCTION,
    Obj,
    find,
    of_kind,
    render,
    the_container,
)
from tests.deploy.kustomize import pod_templates

NODES = 3


def _cluster(objects: list[Obj]) -> Obj:
    clusters = of_kind(objects, "RabbitmqCluster")
    assert len(clusters) == 1, f"expected one RabbitmqCluster, found {len(clusters)}"
    return clusters[0]


def _pod_labels(cluster: Obj) -> dict[str, str]:
    """The labels the operator puts on the cluster's pods (it selects them by the first)."""
    return {
        "app.kubernetes.io/name": cluster["metadata"]["name"],
        "app.kubernetes.io/component": "rabbitmq",
    }


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def test_the_broker_is_three_rabbitmq_nodes() -> None:
    objects = render(PRODUCTION)
    spec = _cluster(objects)["spec"]
    assert spec["replicas"] == NODES
    assert not of_kind(objects, "StatefulSet"), "no dev broker or database in production"
    # the release the dev overlay (and so every local test of the manifests) runs
    dev_image = the_container(find(render(DEV), "StatefulSet", "rabbitmq"))["image"]
    assert spec["image"] == dev_image
    # the operator derives RabbitMQ's memory alarm from the limit: request == limit
    resources = spec["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert spec["persistence"]["storage"]
    assert "pause_minority" in spec["rabbitmq"]["additionalConfig"]


def test_the_nodes_run_on_different_machines() -> None:
    cluster = _cluster(render(PRODUCTION))
    terms = cluster["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert any(
        term["topologyKey"] == "kubernetes.io/hostname"
        and _selects(term["labelSelector"]["matchLabels"], _pod_labels(cluster))
        for term in terms
    ), "no required anti-affinity keeps two RabbitMQ nodes off one machine"


def test_disruptions_keep_a_majority_of_the_nodes() -> None:
    objects = render(PRODUCTION)
    cluster = _cluster(objects)
    replicas = cluster["spec"]["replicas"]
    pdbs = [
        p
        for p in of_kind(objects, "PodDisruptionBudget")
        if _selects(p["spec"]["selector"]["matchLabels"], _pod_labels(cluster))
    ]
    assert len(pdbs) == 1, "the operator makes no PodDisruptionBudget: the overlay must"
    budget = pdbs[0]["spec"]
    if "minAvailable" in budget:
        may_go = replicas - int(budget["minAvailable"])
    else:
        may_go = int(budget["maxUnavailable"])
    assert replicas - may_go >= replicas // 2 + 1, "a drain could take the quorum queues' majority"
    assert may_go >= 1, "a node drain could never proceed"


def test_rabbitmq_pods_meet_the_namespace_pod_security() -> None:
    """The namespace enforces "restricted"; older operators' pods declare none of it, so the
    overlay's StatefulSet override must (the operator merges it into its pod spec)."""
    objects = render(PRODUCTION)
    namespace = find(objects, "Namespace", "chat")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = _cluster(objects)["spec"]["override"]["statefulSet"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    containers = {c["name"]: c for c in pod["containers"] + pod.get("initContainers", [])}
    # the operator's init container and broker container
    assert set(containers) == {"setup-container", "rabbitmq"}
    for name, container in containers.items():
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert not sc["capabilities"].get("add"), name
        assert not sc.get("privileged"), name


def _comparable(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    """The objects, less what a production overlay is expected to set (docs/DEPLOY.md,
    section 5): the image, the ConfigMap's values (its keys stay), the Ingress's host and TLS
    (its routes stay)."""
    out = {}
    for obj in copy.deepcopy(objects):
        for template in pod_templates(obj):
            for container in template["spec"]["containers"]:
                container.pop("image")
        if (obj["kind"], obj["metadata"]["name"]) == ("ConfigMap", "chat-config"):
            obj["data"] = sorted(obj["data"])
        if obj["kind"] == "Ingress":
            obj["spec"].pop("tls", None)
            for rule in obj["spec"]["rules"]:
                rule.pop("host", None)
        out[(obj["kind"], obj["metadata"]["name"])] = obj
    return out


def test_production_is_the_base_plus_the_broker() -> None:
    """Everything else production runs is the base's (its replicas, probes, security, shutdown
    budget: what the other tests check on the base), so the overlay adds the broker and sets
    the image, the settings and the Ingress host, and changes nothing else."""
    base, production = _comparable(render(BASE)), _comparable(render(PRODUCTION))
    assert set(production) - set(base) == {
        ("RabbitmqCluster", "rabbitmq"),
        ("PodDisruptionBudget", "rabbitmq"),
    }
    for key, obj in base.items():
        assert production[key] == obj, f"production changes {key} of the base"
    for obj in render(PRODUCTION):
        for template in pod_templates(obj):
            for container in template["spec"]["containers"]:
                assert not container["image"].startswith("chat"), "the image is not set"
