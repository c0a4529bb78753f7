"""Where a backfill stands, read only from what its runs write under the output: the run
reports (`<output>/_reports/<run_id>.json`) and the leases of running shards
(`<output>/_leases/<model>/<shard>.json`). No Spark, no graph: it works while the backfill runs
and after the cluster is gone.

    python -m imagegraph.runs.status --output s3://bucket/out [--model NAME@VERSION] [--json]

A shard is
- `running` while a live lease covers it (its holder, pid and last renewal are shown);
- `done` when its latest report reconciles and leaves nothing to do;
- `failed` when its latest report marks the run failed (`status`; its `stop` line is shown) or
  does not reconcile (reports written before `status` existed are judged by this alone);
- `not started` when no report or lease names it but another shard of its count does.
`left` is what the latest report of a shard did not account for (listed - written -
dead-lettered - skipped; 0 for a done shard, unknown for a shard never reported). The rate is
objects processed (by a failed run: committed) per second of run time over the reports read,
per shard; the estimate of the
time left divides what is left by that rate times the shards running at once (at least one).

With `--picture PATH` it also draws the backfill over wall-clock time (`backfill_timeline`, drawn
by `runs.picture.draw_backfill`): each run's span on its shard's row, and the objects finished.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from imagegraph.cli import prog_name
from imagegraph.config import S3Config, load_config
from imagegraph.errors import JobError
from imagegraph.runs.lease import (
    StoredLease,
    lease_directory,
    lease_models,
    lease_store,
    shard_name,
)
from imagegraph.runs.report import FAILED as FAILED_RUN
from imagegraph.runs.report import images_per_s
from imagegraph.storage.outputs import REPORTS_DIR
from imagegraph.storage.selection import Shard

PROG = "python -m imagegraph.runs.status"

RUNNING, DONE, FAILED, NOT_STARTED = "running", "done", "failed", "not started"


@dataclass(frozen=True)
class ShardStatus:
    """One shard of one model: `shard` as the lease names it (`3-of-8`, or `all`), its `state`,
    the latest report's counts (None when it has none) and, when running, its lease holder."""

    model: str
    shard: str
    state: str
    run_id: str = ""
    listed: int | None = None
    written: int | None = None
    dead_lettered: int | None = None
    skipped: int | None = None
    left: int | None = None
    dead_lettered_by_reason: dict[str, Any] = field(default_factory=dict)
    stop_line: str = ""
    holder: str = ""
    renewed_s_ago: float | None = None


@dataclass(frozen=True)
class BackfillStatus:
    """Every shard's status; the totals over them; `rate_img_per_s` per shard (objects
    processed per second of run time) and `eta_s`, seconds left at that rate (None when
    unknown)."""

    shards: list[ShardStatus]
    rate_img_per_s: float
    eta_s: float | None

    def count(self, state: str) -> int:
        return sum(1 for shard in self.shards if shard.state == state)

    @property
    def left(self) -> int:
        return sum(shard.left or 0 for shard in self.shards)

    def total(self, name: str) -> int:
        return sum(getattr(shard, name) or 0 for shard in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {"shards": [asdict(shard) for shard in self.shards],
                "rate_img_per_s": self.rate_img_per_s, "eta_s": self.eta_s,
                "left": self.left, **{state: self.count(state)
                                      for state in (DONE, RUNNING, FAILED, NOT_STARTED)}}

    def lines(self) -> list[str]:
        """The status as a table for people, one shard a line, then the total line."""
        rows = [f"{'model':<20} {'shard':<8} {'state':<12} {'listed':>9} {'written':>9} "
                f"{'dead':>7} {'skipped':>9} {'left':>9}  detail"]
        for s in self.shards:
            detail = (f"run {s.run_id} on {s.holder}, renewed {s.renewed_s_ago:.0f} s ago"
                      if s.state == RUNNING else s.stop_line or (f"run {s.run_id}"
                                                                  if s.run_id else ""))
            rows.append(f"{s.model:<20} {s.shard:<8} {s.state:<12} {_n(s.listed):>9} "
                        f"{_n(s.written):>9} {_n(s.dead_lettered):>7} {_n(s.skipped):>9} "
                        f"{_n(s.left):>9}  {detail}")
        eta = "unknown" if self.eta_s is None else f"{self.eta_s / 60:.0f} min"
        rows.append(f"total: {len(self.shards)} shard(s): {self.count(DONE)} done, "
                    f"{self.count(RUNNING)} running, {self.count(FAILED)} failed, "
                    f"{self.count(NOT_STARTED)} not started; written "
                    f"{self.total('written')}, dead-lettered {self.total('dead_lettered')}, "
                    f"left {self.left}; {self.rate_img_per_s:.1f} images/s per shard; "
                    f"time left {eta}")
        return rows


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def _shard_key(report: dict[str, Any]) -> str:
    """The lease name of the shard a report's run covered."""
    text = report.get("shard") or ""
    if not text:
        return shard_name(None)
    index, _, count = text.partition("/")
    return shard_name(Shard(int(index), int(count)))


def _failed(report: dict[str, Any]) -> bool:
    """Whether the run of `report` failed: marked so, or its counts do not reconcile."""
    return report.get("status") == FAILED_RUN or not report.get("reconciled", False)


def _report_status(model: str, shard: str, report: dict[str, Any]) -> ShardStatus:
    listed = int(report.get("listed", 0))
    written = int(report.get("committed_predictions", report.get("written", 0)))
    dead = int(report.get("committed_dead_letters", report.get("dead_lettered", 0)))
    skipped = int(report.get("skipped_done", 0))
    failed = _failed(report)
    stop = str(report.get("stop") or "")
    if failed and not stop:
        stop = "; ".join(report.get("disagreements") or []) or "the run failed"
    return ShardStatus(model, shard, FAILED if failed else DONE, str(report.get("run_id", "")),
                       listed, written, dead, skipped, max(0, listed - written - dead - skipped),
                       dict(report.get("dead_lettered_by_reason") or {}),
                       stop if failed else "")


def summarize(
    reports: list[dict[str, Any]], leases: dict[tuple[str, str], StoredLease]
) -> BackfillStatus:
    """The status of every shard named by `reports` (run reports as written) or by the live
    ones of `leases` ((model, shard name) -> lease as read), plus the shards of the same count
    that nothing names yet."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for report in sorted(reports, key=lambda r: (str(r.get("started_at", "")),
                                                 str(r.get("run_id", "")))):
        latest[(str(report.get("model", "")), _shard_key(report))] = report
    statuses: dict[tuple[str, str], ShardStatus] = {
        key: _report_status(key[0], key[1], report) for key, report in latest.items()}
    for (model, shard), lease in leases.items():
        if not lease.live:
            continue
        # a running shard keeps the counts of its previous report, if any
        before = statuses.get((model, shard)) or ShardStatus(model, shard, RUNNING)
        statuses[(model, shard)] = replace(
            before, state=RUNNING, run_id=str(lease.body.get("run_id", "")), stop_line="",
            holder=f"{lease.body.get('host')} (pid {lease.body.get('pid')})",
            renewed_s_ago=lease.age_s)
    for model, shard in list(statuses):
        if "-of-" in shard:
            count = int(shard.partition("-of-")[2])
            for index in range(count):
                name = shard_name(Shard(index, count))
                statuses.setdefault((model, name), ShardStatus(model, name, NOT_STARTED))
    processed = sum(_processed(r) for r in reports)
    elapsed = sum(float(r.get("elapsed_s", 0.0)) for r in reports)
    rate = images_per_s(processed, elapsed)
    shards = [statuses[key] for key in sorted(statuses, key=_order)]
    unknown = any(s.left is None and s.state != DONE for s in shards)
    running = max(1, sum(1 for s in shards if s.state == RUNNING))
    left = sum(s.left or 0 for s in shards)
    eta = None if unknown or (left and rate <= 0) else left / (rate * running) if left else 0.0
    return BackfillStatus(shards, rate, eta)


def _processed(report: dict[str, Any]) -> int:
    """Objects a run worked on: what it committed when it failed, else listed - skipped."""
    if report.get("status") == FAILED_RUN:
        return _committed(report)
    return int(report.get("listed", 0)) - int(report.get("skipped_done", 0))


@dataclass(frozen=True)
class RunSpan:
    """One run of shard (`model`, `shard`) on the wall clock, from `start` to `end` (UTC):
    `outcome` DONE or FAILED as its report judges it, or RUNNING (its live lease, until now)."""

    model: str
    shard: str
    run_id: str
    outcome: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class BackfillTimeline:
    """The backfill over wall-clock time, as of `now` (UTC): `rows`, every (model, shard) in the
    status's order; each run's span; `finished`, the objects the runs committed (predictions
    and dead letters) added up over time, (time, objects so far) from (the first start, 0);
    `listed`, objects listed by the shards' latest reports, and `unlisted_shards`, the shards
    without a report (their objects are not in `listed`); `estimated_end`, now plus the
    status's time left, None when unknown or nothing is left."""

    rows: list[tuple[str, str]]
    spans: list[RunSpan]
    finished: list[tuple[datetime, int]]
    listed: int
    unlisted_shards: int
    now: datetime
    estimated_end: datetime | None


def backfill_timeline(reports: list[dict[str, Any]],
                      leases: dict[tuple[str, str], StoredLease],
                      now: datetime) -> BackfillTimeline:
    """The timeline of the backfill of `reports` and `leases` (as `summarize` takes them) at
    `now` (aware, UTC). A run's objects count when each chunk was committed (its
    `committed_at`), or all at its end (`started_at` + `elapsed_s`) for a report without
    them; a running run's count once its report is written."""
    status = summarize(reports, leases)
    spans, steps = [], []
    for report in reports:
        start = _when(str(report.get("started_at", "")))
        end = start + timedelta(seconds=float(report.get("elapsed_s", 0.0)))
        spans.append(RunSpan(str(report.get("model", "")), _shard_key(report),
                             str(report.get("run_id", "")), FAILED if _failed(report) else DONE,
                             start, end))
        chunks = report.get("chunk_figures") or []
        if chunks and all("committed_at" in chunk for chunk in chunks):
            steps += [(_when(chunk["committed_at"]),
                       int(chunk["classified"]) + int(chunk["dead_lettered"])) for chunk in chunks]
        else:
            steps.append((end, _committed(report)))
    for (model, shard), lease in leases.items():
        if lease.live:
            spans.append(RunSpan(model, shard, str(lease.body.get("run_id", "")), RUNNING,
                                 _when(str(lease.body.get("started_at", ""))), now))
    rows = [(s.model, s.shard) for s in status.shards]
    spans.sort(key=lambda span: (rows.index((span.model, span.shard)), span.start))
    finished = [(min(span.start for span in spans), 0)]
    for when, objects in sorted(steps):
        finished.append((when, finished[-1][1] + objects))
    eta = status.eta_s  # 0.0 when nothing is left
    return BackfillTimeline(rows, spans, finished, status.total("listed"),
                            sum(1 for s in status.shards if s.listed is None), now,
                            now + timedelta(seconds=eta) if eta else None)


def _when(text: str) -> datetime:
    """An ISO-8601 time as runs write it; one without a zone is taken as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _committed(report: dict[str, Any]) -> int:
    """Objects a run committed: its predictions and dead letters, read back."""
    return int(report.get("committed_predictions", 0)) + \
        int(report.get("committed_dead_letters", 0))


def _order(key: tuple[str, str]) -> tuple[Any, ...]:
    model, shard = key
    index, _, count = shard.partition("-of-")
    return (model, int(count) if count else 0, int(index) if count else 0)


def read_runs(output_uri: str, model_tag: str | None, s3: S3Config
              ) -> tuple[list[dict[str, Any]], dict[tuple[str, str], StoredLease]]:
    """The run reports and the leases ((model, shard name) -> lease) of the backfill under
    `output_uri` (s3://, s3a:// or file://), of every model or only `model_tag`; `JobError`
    when the output holds no run of it."""
    output_uri = output_uri.rstrip("/")
    report_store = lease_store(f"{output_uri}/{REPORTS_DIR}", s3)
    reports = []
    for name in report_store.names():
        if name.endswith(".json"):
            stored = report_store.read(name)
            if stored is not None and (model_tag is None or stored.body.get("model") == model_tag):
                reports.append(stored.body)
    leases: dict[tuple[str, str], StoredLease] = {}
    models = [model_tag] if model_tag else sorted(
        {str(r.get("model")) for r in reports}
        | set(lease_models(output_uri, s3)))  # a running first run has no report yet
    for model in models:
        store = lease_store(lease_directory(output_uri, model), s3)
        for name in store.names():
            if name.endswith(".json"):
                lease = store.read(name)
                if lease is not None:
                    leases[(model, name[:-len(".json")])] = lease
    if not reports and not leases:
        raise JobError(f"{output_uri}: no run report or lease"
                       + (f" of {model_tag}" if model_tag else "")
                       + " under it; is this a job's --output?")
    return reports, leases


def main(argv: list[str] | None = None) -> int:
    """Print where the backfill in the arguments `argv` (default: the process's) stands, and
    draw it when asked; the exit code."""
    parser = argparse.ArgumentParser(
        prog=prog_name(PROG), allow_abbrev=False,
        description="Where a backfill stands: per shard done, running, failed or not started, "
                    "with counts, what is left and an estimate of the time left, read from "
                    "the run reports and leases under --output. Exit codes: 0 status printed "
                    "(and the picture written), 2 usage, configuration, nothing to read or the "
                    "picture not written.")
    parser.add_argument("--output", required=True,
                        help="the jobs' --output (s3://, s3a:// or file://)")
    parser.add_argument("--model", default=None,
                        help="only this model, NAME@VERSION (default: every model)")
    parser.add_argument("--config", default=None,
                        help="the jobs' YAML configuration, for its s3 section (endpoint, "
                             "credentials); default: built-in defaults, boto3's own credentials")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.add_argument("--picture", default=None, metavar="PATH",
                        help="also write the backfill over wall-clock time as a PNG to the "
                             "local file PATH: each run's span on its shard's row (done, "
                             "failed, running) and the objects finished against those listed, "
                             "with the estimated end")
    args = parser.parse_args(argv)
    try:
        s3 = load_config(args.config).s3
        reports, leases = read_runs(args.output, args.model, s3)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = summarize(reports, leases)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2, sort_keys=True))
    else:
        print("\n".join(status.lines()))
    if args.picture:
        return _write_picture(args.picture, backfill_timeline(reports, leases,
                                                              datetime.now(timezone.utc)))
    return 0


def _write_picture(path: str, timeline: BackfillTimeline) -> int:
    """Write `timeline`'s PNG to the local file `path`; the exit code."""
    from imagegraph.runs.picture import draw_backfill  # matplotlib only when asked

    try:
        with open(path, "wb") as file:
            file.write(draw_backfill(timeline))
    except OSError as exc:
        print(f"error: cannot write the picture: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
