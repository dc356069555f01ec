"""The Dockerfile (no engine here to build it): multi-stage, pinned, non-root, and every
path it copies exists in the repository and is not hidden by .dockerignore."""

from __future__ import annotations

import fnmatch
import re

from tests.deploy import dockerfile
from tests.deploy.k8s_objects import DOCKERFILE, REPO

DOCKERIGNORE = REPO / ".dockerignore"


def _stages() -> list[dockerfile.Stage]:
    return dockerfile.parse(DOCKERFILE)


def test_multi_stage_with_pinned_bases() -> None:
    stages = _stages()
    assert len(stages) >= 2, "build in one stage, run from a clean one"
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue  # FROM an earlier stage
        image, _, tag = stage.base.partition("@")[0].rpartition(":")
        assert image and "/" not in tag, f"{stage.base}: pin the base image by tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{stage.base}: not a pinned tag"
    final = stages[-1]
    assert final.base.startswith("python:3.11"), "the runtime is Python 3.11 (pyproject)"
    assert final.base.partition(":")[2].find("slim") >= 0, "use a slim runtime image"


def test_runs_as_a_non_root_user() -> None:
    user = _stages()[-1].last("USER")
    assert user is not None, "the final stage must set USER"
    uid = user.args.split(":")[0]
    assert uid.isdigit() and int(uid) == 10001, "USER by number (runAsNonRoot can check it)"
    instructions = _stages()[-1].instructions
    assert instructions.index(user) > max(
        i for i, ins in enumerate(instructions) if ins.keyword in ("RUN", "COPY", "ADD")
    ), "USER comes after the last RUN/COPY"


def test_entrypoint_selects_the_service() -> None:
    final = _stages()[-1]
    assert dockerfile.exec_form(final.last("ENTRYPOINT")) == ["python", "-m", "services"]
    assert dockerfile.exec_form(final.last("CMD")) == ["all"]
    assert final.last("HEALTHCHECK") is None  # Kubernetes probes do this
    assert final.last("WORKDIR") is not None


def test_runtime_copies_the_venv_and_the_code() -> None:
    final = _stages()[-1]
    copied = set()
    for instruction in final.all("COPY"):
        sources, origin = dockerfile.copy_sources(instruction)
        copied.update(s.rstrip("/") for s in sources if origin is None)
        if origin is not None:
            assert origin in {s.name for s in _stages()[:-1]}, instruction.args
    assert {"services", "web", "migrations", "alembic.ini"} <= copied
    assert not final.all("ADD"), "use COPY"


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        pattern = pattern.removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or any(
            fnmatch.fnmatch(part, pattern) for part in parts
        ):
            ignored = not negate
    return ignored


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    missing, hidden = [], []
    for stage in _stages():
        for instruction in stage.all("COPY") + stage.all("ADD"):
            sources, origin = dockerfile.copy_sources(instruction)
            if origin is not None:
                continue
            for source in sources:
                if not (REPO / source).exists():
                    missing.append(f"line {instruction.line}: {source}")
                if _ignored(source.rstrip("/"), patterns):
                    hidden.append(f"line {instruction.line}: {source}")
    assert not missing, f"the Dockerfile COPYs paths that do not exist: {missing}"
    assert not hidden, f".dockerignore excludes paths the Dockerfile COPYs: {hidden}"
    for secret in (".env", ".git", ".venv", "var", "tests"):
        assert _ignored(secret, patterns), f"{secret} should stay out of the build context"
