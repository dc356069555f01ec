"""Run the dev overlay's containers *as written in the manifests* as local processes.

For the migrate Job and the auth, gateway and history Deployments of the rendered dev
overlay, this takes each container's command/args (falling back to the Dockerfile's
ENTRYPOINT/CMD as Kubernetes does) and its environment (the image's ENV, then envFrom/env with
ConfigMap, Secret and downward-API references resolved), overrides only the addresses (its own
MariaDB database and RabbitMQ vhost, 127.0.0.1 and a free port) and runs them with the repo's
.venv. The Job runs first; then every probe path of every container must answer 200, and the
walking-skeleton scenario of API.md must pass through the processes. Finally each process gets
SIGTERM, as the kubelet sends it, and must be gone within its termination budget (the gateway
closing its sockets with 1012 first). A manifest that drifts from the code fails here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from tests.deploy.k8s_objects import DEV, render
from tests.deploy.local_pods import (
    PROBES,
    Launcher,
    Process,
    from_manifest,
    wait_for_200,
    wait_for_exit,
)

pytestmark = [pytest.mark.scaled, pytest.mark.timeout(240)]

MARIADB = ("127.0.0.1", 3306)
RABBITMQ = ("127.0.0.1", 5672)
STARTUP_TIMEOUT = 90.0
JOB_TIMEOUT = 120.0
Frame = dict[str, Any]


# ---- shared infrastructure: our own database and vhost ---------------------------------------


def _reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1.0):
            return True
    except OSError:
        return False


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the smoke test must run, not skip)")
    pytest.skip(reason)


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def addresses() -> Iterator[dict[str, str]]:
    """A fresh MariaDB database and RabbitMQ vhost; dropped afterwards."""
    if not _reachable(MARIADB):
        _unavailable(f"MariaDB is not reachable at {MARIADB[0]}:{MARIADB[1]}")
    if not _reachable(RABBITMQ):
        _unavailable(f"RabbitMQ is not reachable at {RABBITMQ[0]}:{RABBITMQ[1]}")
    if shutil.which("rabbitmqctl") is None:
        _unavailable("rabbitmqctl is not installed (needed to create a test vhost)")
    import pymysql

    name = f"chat_smoke_{uuid.uuid4().hex[:12]}"
    created = _rabbitmqctl("add_vhost", name)
    if created.returncode != 0:
        _unavailable(f"rabbitmqctl add_vhost failed: {created.stderr.strip()}")
    try:
        granted = _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        assert granted.returncode == 0, granted.stderr
        db = pymysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", autocommit=True)
        with db.cursor() as cursor:
            cursor.execute(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        db.close()
        try:
            yield {
                "CHAT_DATABASE_URL": f"mysql://root@{MARIADB[0]}:{MARIADB[1]}/{name}",
                "CHAT_BROKER_URL": f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{name}",
            }
        finally:
            db = pymysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", autocommit=True)
            with db.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            db.close()
    finally:
        _rabbitmqctl("delete_vhost", name)


@pytest.fixture
def launcher(addresses: dict[str, str], tmp_path: Path) -> Iterator[Launcher]:
    # Depends on `addresses` so the processes stop before the database and vhost go.
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop_all()


# ---- the walking skeleton, per API.md ------------------------------------------------------------


async def _expect(ws: Any, want: Callable[[Frame], bool], what: str, timeout: float = 10) -> Frame:
    from websockets.exceptions import ConnectionClosed

    seen: list[Frame] = []

    async def read() -> Frame:
        while True:
            frame: Frame = json.loads(await ws.recv())
            if want(frame):
                return frame
            seen.append(frame)

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        pytest.fail(f"no {what} within {timeout}s; other frames: {seen[-10:]}")
    except ConnectionClosed as exc:
        pytest.fail(f"socket closed ({exc}) while waiting for {what}; frames: {seen[-10:]}")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _walking_skeleton(auth: Process, gateway: Process, history: Process, origin: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed
    from websockets.typing import Origin

    suffix = uuid.uuid4().hex[:8]
    alice, bob = f"alice_{suffix}", f"bob_{suffix}"
    password = "smoke test password"
    async with httpx.AsyncClient(timeout=10.0) as http:
        tokens = {}
        for user in (alice, bob):
            body = {"username": user, "password": password}
            r = await http.post(auth.url("/api/auth/register"), json=body)
            assert r.status_code == 201, f"register {user}: {r.status_code} {r.text}"
            assert r.json()["username"] == user
            r = await http.post(auth.url("/api/auth/login"), json=body)
            assert r.status_code == 200, f"login {user}: {r.status_code} {r.text}"
            tokens[user] = r.json()["access_token"]
        r = await http.post(
            auth.url("/api/rooms/direct"), json={"username": bob}, headers=_bearer(tokens[alice])
        )
        assert r.status_code == 200, f"direct room: {r.status_code} {r.text}"
        room = r.json()
        assert room["kind"] == "direct" and sorted(room["members"]) == sorted([alice, bob])

        ws_url = f"ws://127.0.0.1:{gateway.workload.port}/ws"
        async with (
            connect(ws_url, origin=Origin(origin), open_timeout=10) as ws_alice,
            connect(ws_url, origin=Origin(origin), open_timeout=10) as ws_bob,
        ):
            for ws, user in ((ws_alice, alice), (ws_bob, bob)):
                await ws.send(json.dumps({"type": "auth", "token": tokens[user]}))
                ready = await _expect(ws, lambda f: f.get("type") == "ready", f"ready for {user}")
                assert ready["user"]["username"] == user

            text = f"hello from the manifests {suffix}"
            send = {"type": "send", "to": bob, "body": text, "client_msg_id": "smoke-1"}
            await ws_alice.send(json.dumps(send))
            ack = await _expect(
                ws_alice,
                lambda f: f.get("type") in ("ack", "error") and f.get("client_msg_id") == "smoke-1",
                "ack",
            )
            assert ack["type"] == "ack", ack
            message = ack["message"]
            assert (message["room"], message["sender"], message["body"]) == (
                room["id"],
                alice,
                text,
            )
            got = await _expect(
                ws_bob,
                lambda f: f.get("type") == "message" and f["message"]["id"] == message["id"],
                "the message at the recipient",
            )
            assert got["message"]["body"] == text

            deadline = time.monotonic() + 15.0
            found: list[Frame] = []
            while not found:
                r = await http.get(
                    history.url(f"/api/history/{room['id']}"), headers=_bearer(tokens[bob])
                )
                assert r.status_code == 200, f"history: {r.status_code} {r.text}"
                found = [m for m in r.json()["messages"] if m["id"] == message["id"]]
                if not found:
                    assert time.monotonic() < deadline, "the acked message never reached history"
                    await asyncio.sleep(0.1)
            assert found == [message]

            # The kubelet's SIGTERM: the gateway closes its sockets with 1012 (clients resume
            # elsewhere), within CHAT_SHUTDOWN_GRACE.
            gateway.popen.send_signal(signal.SIGTERM)
            grace = float(gateway.workload.env.get("CHAT_SHUTDOWN_GRACE", "5"))
            try:
                async with asyncio.timeout(grace + 5):
                    while True:
                        await ws_bob.recv()
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                assert code == 1012, f"the draining gateway closed with {code}, not 1012"
            except TimeoutError:
                pytest.fail("the gateway did not close its sockets after SIGTERM")


# ---- the test ------------------------------------------------------------------------------------


def test_dev_overlay_runs_as_written(launcher: Launcher, addresses: dict[str, str]) -> None:
    objects = render(DEV)
    tmp = launcher.tmp
    migrate = from_manifest(objects, "Job", "migrate", addresses, tmp)
    services = {
        name: from_manifest(objects, "Deployment", name, addresses, tmp)
        for name in ("auth", "gateway", "history")
    }

    launcher.run_to_completion(migrate, JOB_TIMEOUT)
    running = {name: launcher.start(workload) for name, workload in services.items()}

    deadline = time.monotonic() + STARTUP_TIMEOUT
    for process in running.values():
        container = process.workload.container
        for probe in PROBES:
            if probe in container:
                wait_for_200(process, container[probe]["httpGet"]["path"], deadline)
        metrics = httpx.get(process.url("/metrics"), timeout=5.0)
        assert metrics.status_code == 200, f"{process.workload.name} /metrics: {metrics.text}"
        assert metrics.headers["content-type"].startswith("text/plain")

    origin = running["gateway"].workload.env["CHAT_ALLOWED_ORIGINS"].split(",")[0].strip()
    asyncio.run(_walking_skeleton(running["auth"], running["gateway"], running["history"], origin))

    wait_for_exit(running["gateway"], running["gateway"].workload.grace)
    for name in ("auth", "history"):
        running[name].popen.send_signal(signal.SIGTERM)
    for name in ("auth", "history"):
        wait_for_exit(running[name], running[name].workload.grace)
