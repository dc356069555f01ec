"""Offline, strict validation of the custom resources the manifests use.

kubernetes-validate knows only Kubernetes' own kinds. The production overlay also uses the
RabbitMQ Cluster Operator's ``RabbitmqCluster`` (rabbitmq.com/v1beta1), whose CRD is not
available offline, so this module holds a schema for it, written from the operator's API type
``RabbitmqClusterSpec`` (api/v1beta1/rabbitmqcluster_types.go in rabbitmq/cluster-operator) for
the fields listed in ``RABBITMQ_CLUSTER``: their names, types, enums and limits as the operator
declares them. Like kubernetes-validate's strict mode, any other field is an error, so a
manifest that starts using another field (or misspells one) fails until this schema learns it
(check the operator's documentation first).

The Kubernetes types embedded in the spec (metadata, affinity, tolerations, resources, the
StatefulSet override's pod spec, ...) are checked against kubernetes-validate's own strict
definitions of the same Kubernetes version, so they get exactly the strictness of the built-in
kinds.

What this cannot tell: whether the operator version you install accepts every field (older
operators lack some), and what the operator makes of them at run time.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

Obj = dict[str, Any]

# The $id of kubernetes-validate's _definitions.json: references into it resolve there.
DEFINITIONS = "https://kubernetes.io/api/_definitions.json"


def _k8s(name: str) -> Obj:
    """A reference to a Kubernetes definition, e.g. ``io.k8s.api.core.v1.Affinity``."""
    return {"$ref": f"{DEFINITIONS}#/$defs/{name}"}


def _closed(properties: Obj, required: tuple[str, ...] = ()) -> Obj:
    """An object with exactly these properties (strict: no others)."""
    schema: Obj = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


_STRING_MAP: Obj = {"type": "object", "additionalProperties": {"type": "string"}}
_LABELS_ANNOTATIONS = _closed({"labels": _STRING_MAP, "annotations": _STRING_MAP})

# RabbitmqClusterSpec: the fields below, as rabbitmqcluster_types.go declares them.
_SPEC = _closed(
    {
        # +kubebuilder:validation:Minimum:=0 (int32)
        "replicas": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "image": {"type": "string"},
        "imagePullSecrets": {
            "type": "array",
            "items": _k8s("io.k8s.api.core.v1.LocalObjectReference"),
        },
        "service": _closed(
            {
                "type": {"enum": ["ClusterIP", "LoadBalancer", "NodePort"]},
                "annotations": _STRING_MAP,
            }
        ),
        "persistence": _closed(
            {
                "storageClassName": {"type": "string"},
                "storage": _k8s("io.k8s.apimachinery.pkg.api.resource.Quantity"),
            }
        ),
        "resources": _k8s("io.k8s.api.core.v1.ResourceRequirements"),
        "affinity": _k8s("io.k8s.api.core.v1.Affinity"),
        "tolerations": {"type": "array", "items": _k8s("io.k8s.api.core.v1.Toleration")},
        "rabbitmq": _closed(
            {
                "additionalPlugins": {
                    "type": "array",
                    "maxItems": 100,
                    "items": {"type": "string", "pattern": r"^\w+$", "maxLength": 100},
                },
                # rabbitmq.conf lines appended to the operator's defaults
                "additionalConfig": {"type": "string", "maxLength": 2000},
                "advancedConfig": {"type": "string", "maxLength": 100000},
                "envConfig": {"type": "string", "maxLength": 100000},
            }
        ),
        "tls": _closed(
            {
                "secretName": {"type": "string"},
                "caSecretName": {"type": "string"},
                "disableNonTLSListeners": {"type": "boolean"},
            }
        ),
        "override": _closed(
            {
                "statefulSet": _closed(
                    {
                        "metadata": _LABELS_ANNOTATIONS,
                        # a subset of StatefulSetSpec, every field optional
                        "spec": _closed(
                            {
                                "replicas": {"type": "integer", "minimum": 0},
                                "selector": _k8s(
                                    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"
                                ),
                                "template": _closed(
                                    {
                                        "metadata": _closed(
                                            {
                                                "name": {"type": "string"},
                                                "namespace": {"type": "string"},
                                                "labels": _STRING_MAP,
                                                "annotations": _STRING_MAP,
                                            }
                                        ),
                                        # merged into the operator's pod spec (strategic merge:
                                        # containers by name)
                                        "spec": _k8s("io.k8s.api.core.v1.PodSpec"),
                                    }
                                ),
                                "serviceName": {"type": "string"},
                                "podManagementPolicy": {"enum": ["OrderedReady", "Parallel"]},
                                "updateStrategy": _k8s(
                                    "io.k8s.api.apps.v1.StatefulSetUpdateStrategy"
                                ),
                            }
                        ),
                    }
                ),
                "service": _closed(
                    {
                        "metadata": _LABELS_ANNOTATIONS,
                        "spec": _k8s("io.k8s.api.core.v1.ServiceSpec"),
                    }
                ),
            }
        ),
        "skipPostDeploySteps": {"type": "boolean"},
        # +kubebuilder:validation:Minimum:=0; the operator's default is 604800 (a week)
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
    }
)

RABBITMQ_CLUSTER: Obj = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    **_closed(
        {
            "apiVersion": {"const": "rabbitmq.com/v1beta1"},
            "kind": {"const": "RabbitmqCluster"},
            "metadata": _k8s("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": _SPEC,
        },
        required=("apiVersion", "kind", "metadata", "spec"),
    ),
}

# (apiVersion, kind) -> schema
SCHEMAS: dict[tuple[str, str], Obj] = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): RABBITMQ_CLUSTER,
}


def is_custom(doc: Obj) -> bool:
    """A kind this module validates (rather than kubernetes-validate)."""
    return (doc.get("apiVersion"), doc.get("kind")) in SCHEMAS


@functools.cache
def _registry(version: str) -> Registry:
    """kubernetes-validate's strict definitions for ``version`` ("1.29"), picked the way
    kubernetes_validate.validate picks them (the newest schema not newer than ``version``)."""
    wanted = kv.major_minor(version)
    schema_version = [v for v in kv.all_versions() if kv.major_minor(v) <= wanted][-1]
    definitions = kv.schema_contents(
        f"kubernetes-json-schema/v{schema_version}-local-strict/_definitions.json", version
    )
    assert definitions.get("$id") == DEFINITIONS, "kubernetes-validate's definitions moved"
    return Resource.from_contents(definitions) @ Registry()  # type: ignore[no-any-return]


def validate(doc: Obj, version: str) -> None:
    """Raise jsonschema.ValidationError where ``doc`` breaks its kind's schema."""
    schema = SCHEMAS[(doc["apiVersion"], doc["kind"])]
    validator = jsonschema.Draft202012Validator(schema, registry=_registry(version))
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        raise error
