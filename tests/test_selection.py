"""`make test-fast` (pytest -m "not scaled") keeps the all-in-one half of every both-modes test
and the SQLite half of every both-databases test, and leaves the scaled infrastructure out."""

from __future__ import annotations

import re
import subprocess
import sys

from services.common.settings import ROOT

FILES = [
    "tests/test_skeleton.py",  # stack-parametrized, plus cluster-only tests
    "tests/gateway/test_protocol.py",  # stack-parametrized
    "tests/auth/test_rooms.py",  # backend-parametrized (sqlite, mariadb)
    "tests/history/test_store.py",  # engine-parametrized (sqlite, mariadb)
    "tests/faults/test_tcp_proxy.py",  # the fault suite, even where it needs no cluster
]


def test_test_fast_keeps_the_all_in_one_halves() -> None:
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(  # it only collects: nothing runs
        [*argv, "-m", "not scaled", *FILES], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    fast = [line for line in done.stdout.splitlines() if "::" in line]
    counts = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", done.stdout)
    assert counts, done.stdout[-500:]
    assert int(counts.group(3)) >= 20  # the scaled halves, the cluster's tests, the faults
    both_modes = [  # every test of these files that takes `stack` runs in both modes
        f"{name}::{test}[allinone]"
        for name in FILES
        for test in re.findall(r"^def (test_\w+)\(stack\b", (ROOT / name).read_text(), re.M)
    ]
    assert len(both_modes) >= 10
    assert not set(both_modes) - set(fast), "their all-in-one half must stay in test-fast"
    assert not [t for t in fast if t.endswith("[scaled]")]
    assert [t for t in fast if "[sqlite" in t] and not [t for t in fast if "mariadb" in t]
    assert not [t for t in fast if "load_balancer" in t or "sigusr1" in t]  # the cluster's
    assert not [t for t in fast if t.startswith("tests/faults/")]
