"""Figures of each scenario: printed (pytest -s shows them, -rA keeps them) and kept as JSON under
var/reliability/ (docs/RELIABILITY.md quotes them)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tools.cluster import ROOT

OUT = Path(os.environ.get("CHAT_RELIABILITY_DIR", ROOT / "var" / "reliability"))


def report(scenario: str, figures: dict[str, Any]) -> None:
    figures = {"scenario": scenario, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}
    line = json.dumps(figures, sort_keys=False, default=str)
    print(f"\nRELIABILITY {line}")
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "results.jsonl", "a") as f:
        f.write(line + "\n")


def secs(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
