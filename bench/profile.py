"""Summarise a py-spy profile (``py-spy record -f raw``: one ``frame;frame;...;frame count``
line per distinct stack) into the top frames by self and by inclusive time, and by package."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_WAITING = ("PyThread_acquire_lock", "pthread_cond", "futex", "sem_clockwait", "sem_timedwait")
_IDLE_CALLS = {"epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect6"}
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def _package(path: str) -> str:
    """A coarse owner of a frame: services/<part>, the top-level package (aio_pika, asyncio,
    websockets...), a single-file module, or a native library (libc = mostly syscalls)."""
    p = path.replace("\\", "/")
    if "site-packages/" in p:
        p = p.split("site-packages/", 1)[1]
    parts = [x for x in p.split("/") if x]
    if not parts:
        return "?"
    if ".so" in parts[-1] or parts[-1].endswith((".c", ".h")):
        return parts[-1]
    if parts[0] == "services" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py") if len(parts) > 1 else parts[0]


def _name(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), "?"
    file = m.group("file")
    short = "/".join(file.replace("\\", "/").split("/")[-2:])
    return f"{m.group('func')} ({short})", _package(file)


def summarise(
    raw: Path, top: int = 15, loop_markers: tuple[str, ...] = ("runners.py", "run_forever")
) -> dict[str, Any]:
    if not raw.exists():
        return {"error": "no profile written"}
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    pkg_self: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        # the event-loop thread only (py-spy's idle detection does not see the thread pool's
        # workers waiting, so their stacks would dilute the figures)
        if not frames or (loop_markers and not any(m in stack for m in loop_markers)):
            continue
        if any(w in f for f in frames[-4:] for w in _WAITING):
            continue  # a thread blocked on a lock or a queue (py-spy counts it as active)
        if frames[-1].split(" (", 1)[0] in _IDLE_CALLS:
            continue  # waiting for I/O: the event loop idle, a driver waiting for the database
        # the first frame is the thread ("process N:..." / "thread (0x..)")
        names = [_name(f) for f in frames if not f.startswith(("process ", "thread "))]
        if not names:
            continue
        total += n
        leaf, leaf_pkg = names[-1]
        self_t[leaf] += n
        pkg_self[leaf_pkg] += n
        for name in {nm for nm, _ in names}:
            incl[name] += n

    def share(c: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": k, "pct": round(100 * v / total, 1)} for k, v in c.most_common(top) if total
        ]

    return {
        "samples": total,
        "top_self": share(self_t),
        "top_inclusive": share(incl),
        "by_package_self": share(pkg_self),
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(summarise(Path(sys.argv[1])), indent=1))
