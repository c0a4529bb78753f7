"""bench-results.json: every benchmark merges its figures into the one file at the top."""
from __future__ import annotations

import json
from pathlib import Path

RESULTS_FILE = Path(__file__).resolve().parent.parent / "bench-results.json"


def read_results() -> dict:
    """The figures bench-results.json holds, by key ({} before the first benchmark)."""
    return json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}


def merge_results(figures: dict, machine_key: str, machine: str) -> None:
    """Add `figures` and a description of how they were measured under `machine_key`."""
    results = read_results()
    results.update(figures)
    results[machine_key] = machine
    RESULTS_FILE.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
