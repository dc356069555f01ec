"""Figures of each scenario: printed (pytest -s shows them, -rA keeps them) and, when
CHAT_RELIABILITY_DIR names a directory (``make chaos`` sets var/reliability), appended to
``results.jsonl`` there (docs/RELIABILITY.md quotes them). A plain test run writes no file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

OUT = os.environ.get("CHAT_RELIABILITY_DIR", "")


def report(scenario: str, figures: dict[str, Any]) -> None:
    figures = {"scenario": scenario, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}
    line = json.dumps(figures, sort_keys=False, default=str)
    print(f"\nRELIABILITY {line}")
    if OUT:
        Path(OUT).mkdir(parents=True, exist_ok=True)
        with open(Path(OUT) / "results.jsonl", "a") as f:
            f.write(line + "\n")


def secs(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
