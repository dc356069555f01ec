"""The rabbitmq.conf lines of the production RabbitmqCluster (spec.rabbitmq.additionalConfig)
are ones RabbitMQ accepts: a private node boots with them, and takes them.

A key RabbitMQ does not know, or a value it refuses, stops a node at boot; in Kubernetes that
would be three pods in CrashLoopBackOff. This boots the RabbitMQ installed here (3.10; the
overlay pins 3.13, which knows every 3.10 key we use) on its own ports and data directory, so
the shared node is never touched."""

from __future__ import annotations

import pytest

from tests.deploy.k8s_objects import PRODUCTION, render
from tests.support.private_rabbit import PrivateRabbit

pytestmark = [pytest.mark.scaled, pytest.mark.timeout(180)]


def _additional_config() -> list[str]:
    (cluster,) = [o for o in render(PRODUCTION) if o["kind"] == "RabbitmqCluster"]
    text: str = cluster["spec"]["rabbitmq"]["additionalConfig"]
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_production_rabbitmq_conf_boots_a_node() -> None:
    lines = _additional_config()
    assert lines, "no additionalConfig to check"
    rabbit = PrivateRabbit(config=lines)
    try:
        try:
            rabbit.start()
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"RabbitMQ refused the production rabbitmq.conf lines {lines}:\n{exc}")
        got = rabbit.ctl("eval", "application:get_env(rabbit, cluster_partition_handling).")
        assert got.strip() == "{ok,pause_minority}", got
    finally:
        rabbit.cleanup()
