"""Run ids: one per run of a job, written into every row, report and lease the run makes."""
from __future__ import annotations

import secrets
from datetime import datetime


def new_run_id(now: datetime) -> str:
    """`20261126T201500Z-3f2a1c`: sortable by start time, unique across concurrent runs."""
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
