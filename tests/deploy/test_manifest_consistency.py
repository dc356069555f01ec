"""The rendered manifests agree with each other, with API.md and with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy import dockerfile
from tests.deploy.k8s_objects import (
    API_ROUTES,
    BASE,
    DEV,
    DOCKERFILE,
    K8S,
    OVERLAYS,
    REPO,
    SERVICES,
    Obj,
    config_values,
    container_port,
    find,
    of_kind,
    pod_spec,
    render,
    resolve_env,
    settings_env_names,
    the_container,
)

SECRET_KEYS = {"CHAT_JWT_SECRET", "CHAT_DATABASE_URL", "CHAT_BROKER_URL"}
# Variables read by a library rather than by settings.py.
LIBRARY_ENV = {"GUNICORN_CMD_ARGS"}
GUNICORN_CONF = REPO / "services" / "auth" / "gunicorn_conf.py"


def _app_workloads(objects: list[Obj]) -> list[Obj]:
    return [
        o
        for o in of_kind(objects, "Deployment") + of_kind(objects, "Job")
        if o["metadata"]["labels"].get("app.kubernetes.io/name") == "chat"
    ]


def _selects(selector: dict[str, str], workload: Obj) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def _final_stage() -> dockerfile.Stage:
    return dockerfile.parse(DOCKERFILE)[-1]


def test_ingress_routes_exactly_as_api_md_says() -> None:
    ingress = find(render(BASE), "Ingress", "chat")
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    routes = {}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["pathType"] == "Prefix", path
            routes[path["path"]] = path["backend"]["service"]["name"]
    assert routes == API_ROUTES


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: str(p.relative_to(K8S)))
def test_services_ingress_pdb_and_hpa_point_at_real_pods(overlay: Path) -> None:
    objects = render(overlay)
    deployments = of_kind(objects, "Deployment")
    for name in SERVICES:
        workload = find(objects, "Deployment", name)
        assert workload["spec"]["selector"]["matchLabels"].items() <= (
            workload["spec"]["template"]["metadata"]["labels"].items()
        )
        service = find(objects, "Service", name)
        selected = [d for d in deployments if _selects(service["spec"]["selector"], d)]
        assert selected == [workload], f"Service {name} must select exactly its Deployment"
        for port in service["spec"]["ports"]:
            container_port(the_container(workload), port["targetPort"])
        pdb = find(objects, "PodDisruptionBudget", name)
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert [d for d in deployments if _selects(selector, d)] == [workload]
    for rule in find(objects, "Ingress", "chat")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            ports = find(objects, "Service", backend["name"])["spec"]["ports"]
            assert backend["port"]["name"] in [p["name"] for p in ports]
    target = find(objects, "HorizontalPodAutoscaler", "gateway")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "gateway")
    # The HPA owns the gateway's replica count; a fixed one would fight it on every apply.
    assert "replicas" not in find(objects, "Deployment", "gateway")["spec"]


def test_production_replica_counts() -> None:
    objects = render(BASE)
    assert find(objects, "Deployment", "auth")["spec"]["replicas"] == 2
    assert find(objects, "Deployment", "history")["spec"]["replicas"] == 2
    hpa = find(objects, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert hpa["minReplicas"] == 3 and hpa["maxReplicas"] > 3
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"


def test_history_writers_share_the_shards() -> None:
    """The history replicas share CHAT_HISTORY_SHARDS shards (services/history/shards.py): at
    least two, so a writer that dies has another take its shards over, and no more than the
    shards, since a writer beyond one per shard holds none and writes nothing."""
    objects = render(BASE)
    shards = int(config_values(objects, "ConfigMap", "chat-config")["CHAT_HISTORY_SHARDS"])
    assert shards >= 1
    writers = find(objects, "Deployment", "history")["spec"]["replicas"]
    assert 2 <= writers <= shards, f"{writers} history writers for {shards} shards"
    assert shards % writers == 0, "an uneven split leaves one writer with more shards"


def test_commands_run_the_image_entrypoint_with_a_known_target() -> None:
    entrypoint = dockerfile.exec_form(_final_stage().last("ENTRYPOINT"))
    assert entrypoint == ["python", "-m", "services"]
    targets = {}
    for workload in _app_workloads(render(BASE)):
        container = the_container(workload)
        assert container.get("command", entrypoint) == entrypoint
        (target,) = container["args"]
        targets[workload["metadata"]["name"]] = target
    assert targets == {
        "auth": "auth",
        "gateway": "gateway",
        "history": "history",
        "migrate": "migrate",
    }
    assert dockerfile.exec_form(_final_stage().last("CMD")) == ["all"]


def test_env_names_are_ones_the_code_reads() -> None:
    known = settings_env_names()
    assert "CHAT_DATABASE_URL" in known, "could not read services/common/settings.py"
    objects = render(DEV)
    for workload in _app_workloads(objects):
        env = resolve_env(the_container(workload), objects, "pod-0")
        unknown = {k for k in env if k not in known | LIBRARY_ENV}
        assert not unknown, f"{workload['metadata']['name']}: settings.py never reads {unknown}"
        assert SECRET_KEYS <= env.keys()
        assert env["CHAT_ENV"] == "production"
        assert env["CHAT_HOST"] == "0.0.0.0"
    gateway = find(objects, "Deployment", "gateway")
    assert "CHAT_GATEWAY_ID" in resolve_env(the_container(gateway), objects, "gw-1")


def test_secrets_stay_out_of_the_configmap() -> None:
    config = config_values(render(BASE), "ConfigMap", "chat-config")
    assert not SECRET_KEYS & config.keys()
    assert not any("@" in v or "password" in v.lower() for v in config.values())
    dev = config_values(render(DEV), "Secret", "chat-secrets")
    assert dev.keys() == SECRET_KEYS
    assert len(dev["CHAT_JWT_SECRET"]) >= 32
    assert all("dev-only" in v for v in dev.values()), "dev secrets must say they are dev-only"


def test_ports_and_probes_match() -> None:
    objects = render(BASE)
    config = config_values(objects, "ConfigMap", "chat-config")
    for name in SERVICES:
        workload = find(objects, "Deployment", name)
        container = the_container(workload)
        probes = {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        for probe in probes.values():
            port = container_port(container, probe["httpGet"]["port"])
            assert port == int(config["CHAT_PORT"]), f"{name}: probe port is not CHAT_PORT"
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == config["CHAT_PORT"]


def test_graceful_termination_budget() -> None:
    objects = render(BASE)
    grace = float(config_values(objects, "ConfigMap", "chat-config")["CHAT_SHUTDOWN_GRACE"])
    for name in SERVICES:
        spec = pod_spec(find(objects, "Deployment", name))
        pre_stop = the_container(find(objects, "Deployment", name))["lifecycle"]["preStop"]
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        sleep = float(command[1])
        assert sleep >= 3, "the Ingress needs a few seconds to stop routing to the pod"
        assert spec["terminationGracePeriodSeconds"] >= sleep + grace + 10, name
    # auth: gunicorn waits graceful_timeout for in-flight requests after SIGTERM.
    if GUNICORN_CONF.exists():
        found = re.search(r"^graceful_timeout\s*=\s*(\d+)", GUNICORN_CONF.read_text(), re.M)
        assert found, "graceful_timeout not found in services/auth/gunicorn_conf.py"
        auth = find(objects, "Deployment", "auth")
        sleep = float(the_container(auth)["lifecycle"]["preStop"]["exec"]["command"][1])
        budget = pod_spec(auth)["terminationGracePeriodSeconds"] - sleep
        assert int(found.group(1)) < budget, "gunicorn would be SIGKILLed mid-drain"
    for name in SERVICES:
        strategy = find(objects, "Deployment", name)["spec"]["strategy"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, name


def test_pods_are_locked_down_and_bounded() -> None:
    uid = _final_stage().last("USER")
    assert uid is not None
    image_uid = int(uid.args.split(":")[0])
    for workload in _app_workloads(render(BASE)):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == image_uid, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        container = the_container(workload)
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        volumes = {v["name"]: v for v in spec["volumes"]}
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{name}: /tmp must be an emptyDir"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][kind].keys(), name


def test_dev_infrastructure_is_wired_to_the_app() -> None:
    objects = render(DEV)
    secrets = config_values(objects, "Secret", "chat-secrets")
    for name, port, image in (("mysql", 3306, "mariadb:10.11"), ("rabbitmq", 5672, "rabbitmq:3.")):
        sts = find(objects, "StatefulSet", name)
        service = find(objects, "Service", name)
        assert service["spec"]["clusterIP"] == "None"
        assert sts["spec"]["serviceName"] == name
        assert sts["spec"]["volumeClaimTemplates"], f"{name} needs a PVC"
        assert _selects(service["spec"]["selector"], sts)
        assert port in [p["port"] for p in service["spec"]["ports"]]
        assert the_container(sts)["image"].startswith(image)
        resolve_env(the_container(sts), objects, f"{name}-0")  # every reference resolves
    infra = config_values(objects, "Secret", "dev-infra")
    db, mq = secrets["CHAT_DATABASE_URL"], secrets["CHAT_BROKER_URL"]
    assert db == (
        f"mysql://{infra['MARIADB_USER']}:{infra['MARIADB_PASSWORD']}@mysql:3306/"
        f"{infra['MARIADB_DATABASE']}"
    )
    assert mq.startswith(
        f"amqp://{infra['RABBITMQ_DEFAULT_USER']}:{infra['RABBITMQ_DEFAULT_PASS']}@rabbitmq:5672/"
    )
