"""`make test-fast` is pytest -m "not scaled and not browser": the `scaled` marker must fall on
the scaled half of every both-modes test and the MariaDB half of every both-databases test,
never on their all-in-one and SQLite halves, and on the whole fault suite. Checked on every test
this session collected (before -m or -k deselected any; free: no second pytest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import COLLECTED

FAULTS = Path(__file__).parent / "faults"


def _params(item: pytest.Item) -> set[str]:
    callspec = getattr(item, "callspec", None)
    return {str(v) for v in callspec.params.values()} if callspec is not None else set()


def test_scaled_marks_exactly_the_scaled_halves(request: pytest.FixtureRequest) -> None:
    items = request.config.stash[COLLECTED]
    both_modes = [i for i in items if {"allinone", "scaled"} & _params(i)]
    if not both_modes:
        pytest.skip("checks the tests collected with it: run it with the suite (make test)")
    for item in items:
        scaled = item.get_closest_marker("scaled") is not None
        values = _params(item)
        if "allinone" in values or "sqlite" in values:
            assert not scaled, f"{item.nodeid}: its all-in-one/SQLite half must stay in test-fast"
        if "scaled" in values or "mariadb" in values or FAULTS in item.path.parents:
            assert scaled, f"{item.nodeid}: needs the scaled infrastructure: mark it `scaled`"
    allinone = {i.nodeid for i in both_modes if "allinone" in _params(i)}
    for item in both_modes:  # each both-modes test has its two halves
        assert item.nodeid.replace("[scaled", "[allinone") in allinone, item.nodeid
