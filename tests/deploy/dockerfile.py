"""A small Dockerfile reader: enough to check ours and to run its final stage locally."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, COPY, ...
    args: str  # the rest of the (joined) line
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, each with its instructions (continuations joined)."""
    stages: list[Stage] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif instruction.keyword in ("ARG",) and not stages:
            continue  # global ARGs before the first FROM
        elif not stages:
            raise ValueError(f"{path}:{number}: {keyword} before the first FROM")
        stages[-1].instructions.append(instruction)
    return stages


def exec_form(instruction: Instruction | None) -> list[str]:
    """ENTRYPOINT/CMD as a list (exec form; the shell form becomes ["/bin/sh", "-c", ...])."""
    if instruction is None:
        return []
    if instruction.args.startswith("["):
        value = json.loads(instruction.args)
        assert isinstance(value, list)
        return [str(v) for v in value]
    return ["/bin/sh", "-c", instruction.args]


def env(stage: Stage) -> dict[str, str]:
    """ENV of a stage, in order; ``$VAR``/``${VAR}`` of earlier ENVs expanded, others kept."""
    values: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        words = shlex.split(instruction.args)
        if words and "=" not in words[0]:  # legacy `ENV KEY value`
            words = [f"{words[0]}={' '.join(words[1:])}"]
        for word in words:
            key, _, value = word.partition("=")
            for name, known in values.items():
                value = value.replace(f"${{{name}}}", known).replace(f"${name}", known)
            values[key] = value
    return values


def copy_sources(instruction: Instruction) -> tuple[list[str], str | None]:
    """(sources, --from stage or None) of a COPY/ADD."""
    words = shlex.split(instruction.args)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    origin = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
    if paths and paths[0].startswith("["):
        paths = json.loads(" ".join(paths))
    return paths[:-1], origin
