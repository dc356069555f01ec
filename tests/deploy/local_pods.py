"""Run a container of a rendered manifest as a local process, the way its pod would run it.

The image side comes from the Dockerfile (ENTRYPOINT/CMD, ENV, WORKDIR), mapped onto this
checkout (/app -> the repo, /opt/venv -> .venv, /tmp -> a scratch directory standing in for the
pod's emptyDir); the pod side from the manifest (command/args, envFrom/env with ConfigMap, Secret
and downward-API references resolved). Only the addresses are overridden.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.deploy import dockerfile
from tests.deploy.k8s_objects import (
    DOCKERFILE,
    REPO,
    Obj,
    container_port,
    find,
    pod_spec,
    resolve_env,
    the_container,
)

VENV = REPO / ".venv"
ADDRESS_KEYS = ("CHAT_DATABASE_URL", "CHAT_BROKER_URL", "CHAT_HOST", "CHAT_PORT")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


# ---- the image, as the Dockerfile builds it, mapped onto this checkout -----------------------


@dataclass(frozen=True)
class Image:
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    workdir: str


def _image() -> Image:
    final = dockerfile.parse(DOCKERFILE)[-1]
    workdir = final.last("WORKDIR")
    assert workdir is not None
    return Image(
        entrypoint=dockerfile.exec_form(final.last("ENTRYPOINT")),
        cmd=dockerfile.exec_form(final.last("CMD")),
        env=dockerfile.env(final),
        workdir=workdir.args,
    )


def _map_paths(value: str, mapping: dict[str, Path]) -> str:
    """Image paths in a PATH-like value -> their local counterparts."""
    parts = []
    for part in value.split(":"):
        for image_path, local in mapping.items():
            if part == image_path or part.startswith(image_path + "/"):
                part = str(local) + part[len(image_path) :]
                break
        parts.append(part)
    return ":".join(parts)


# ---- processes ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Workload:
    """One container of one manifest object, ready to run locally."""

    name: str
    obj: Obj
    container: Obj
    argv: list[str]
    env: dict[str, str]
    port: int

    @property
    def grace(self) -> float:
        """Seconds the process has after SIGTERM: the pod's grace minus its preStop sleep."""
        total = float(pod_spec(self.obj).get("terminationGracePeriodSeconds", 30))
        pre_stop = self.container.get("lifecycle", {}).get("preStop", {})
        command = pre_stop.get("exec", {}).get("command", [])
        return total - (float(command[1]) if command[:1] == ["sleep"] else 0.0)


@dataclass
class Process:
    workload: Workload
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 80) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.workload.port}{path}"


def from_manifest(
    objects: list[Obj], kind: str, name: str, addresses: dict[str, str], tmp: Path
) -> Workload:
    obj = find(objects, kind, name)
    container = the_container(obj)
    image = _image()
    pod_name = f"{name}-smoke-{uuid.uuid4().hex[:5]}"
    scratch = tmp / pod_name  # stands in for the pod's /tmp emptyDir
    scratch.mkdir(parents=True)
    mapping = {"/opt/venv": VENV, image.workdir: REPO, "/tmp": scratch}

    env = {"LANG": "C.UTF-8", "HOSTNAME": pod_name, "TMPDIR": str(scratch)}
    for key, value in image.env.items():
        env[key] = _map_paths(value.replace("$PATH", os.environ.get("PATH", "")), mapping)
    manifest_env = resolve_env(container, objects, pod_name)
    missing = [k for k in ADDRESS_KEYS if k not in manifest_env]
    assert not missing, f"{kind}/{name} does not set {missing}"
    env.update(manifest_env)

    port = int(manifest_env["CHAT_PORT"])
    for probe in PROBES:
        if probe in container:
            probe_port = container_port(container, container[probe]["httpGet"]["port"])
            assert probe_port == port, f"{name}: {probe} port {probe_port} != CHAT_PORT {port}"
    local_port = _free_port()
    env.update(addresses)
    env.update({"CHAT_HOST": "127.0.0.1", "CHAT_PORT": str(local_port)})

    # Kubernetes: command replaces ENTRYPOINT (and drops CMD); args replaces CMD.
    if "command" in container:
        argv = list(container["command"]) + list(container.get("args", []))
    else:
        argv = image.entrypoint + list(container.get("args", image.cmd))
    if argv[0] == "python":
        argv[0] = str(VENV / "bin" / "python")
    else:
        found = shutil.which(argv[0], path=env["PATH"])
        assert found, f"{name}: {argv[0]} is not on the image PATH"
        argv[0] = found
    return Workload(name, obj, container, argv, env, local_port)


class Launcher:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.processes: list[Process] = []

    def start(self, workload: Workload) -> Process:
        log = self.tmp / f"{workload.name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                workload.argv,
                env=workload.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: gunicorn workers included
            )
        process = Process(workload, popen, log)
        self.processes.append(process)
        return process

    def run_to_completion(self, workload: Workload, timeout: float) -> Process:
        process = self.start(workload)
        try:
            code = process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{workload.name} did not finish in {timeout:.0f}s:\n{process.tail()}")
        assert code == 0, f"{workload.name} exited with {code}:\n{process.tail()}"
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.popen.pid, signal.SIGKILL)  # the pod's cgroup goes too
            except (ProcessLookupError, PermissionError):
                pass
            process.popen.wait(timeout=10)


def wait_for_200(process: Process, path: str, deadline: float) -> None:
    """Poll ``path`` until it answers 200; fail if the process dies or the deadline passes."""
    timeout = deadline - time.monotonic()
    last = "no answer yet"
    while time.monotonic() < deadline:
        code = process.popen.poll()
        if code is not None:
            pytest.fail(
                f"{process.workload.name} exited with {code} before {path} answered 200:\n"
                f"{process.tail()}"
            )
        try:
            response = httpx.get(process.url(path), timeout=3.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    pytest.fail(
        f"{process.workload.name}: {path} did not answer 200 within {timeout:.0f}s "
        f"(last: {last}):\n{process.tail()}"
    )


def wait_for_exit(process: Process, timeout: float) -> int:
    try:
        return process.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"{process.workload.name} still running {timeout:.0f}s after SIGTERM: the kubelet "
            f"would SIGKILL it (terminationGracePeriodSeconds minus preStop):\n{process.tail()}"
        )
