"""The backfill status from run reports and leases as they are written (no servers)."""
import json
from datetime import datetime, timezone

from PIL import Image

from imagegraph.runs.lease import StoredLease
from imagegraph.runs.status import (
    DONE,
    FAILED,
    NOT_STARTED,
    RUNNING,
    RunSpan,
    backfill_timeline,
    main,
    summarize,
)

MODEL = "digits@v1"


def report(run_id, shard, listed, written, dead, skipped=0, elapsed=10.0, reconciled=True,
           started="2026-12-01T10:00:00"):
    return {"run_id": run_id, "model": MODEL, "shard": shard, "listed": listed,
            "committed_predictions": written, "committed_dead_letters": dead,
            "skipped_done": skipped, "elapsed_s": elapsed, "reconciled": reconciled,
            "started_at": started, "dead_lettered_by_reason": {"decode: truncated": dead},
            "disagreements": [] if reconciled else ["listed = ...: 10 != 7"]}


def lease(run_id, age_s, ttl_s=60.0):
    return StoredLease({"run_id": run_id, "host": "node-1", "pid": 42, "ttl_s": ttl_s,
                        "started_at": "2026-12-01T09:00:00+00:00"}, "v1", age_s)


def test_each_shard_state_from_its_latest_report_and_lease():
    status = summarize(
        [report("r0", "0/4", 100, 98, 2),
         report("r1a", "1/4", 90, 40, 0, started="2026-12-01T09:00:00"),
         report("r1b", "1/4", 90, 45, 1, skipped=40, reconciled=False)],
        {(MODEL, "2-of-4"): lease("r2", age_s=5.0), (MODEL, "3-of-4"): lease("old", 500.0)})
    by_shard = {s.shard: s for s in status.shards}
    assert [s.shard for s in status.shards] == ["0-of-4", "1-of-4", "2-of-4", "3-of-4"]
    assert by_shard["0-of-4"].state == DONE and by_shard["0-of-4"].left == 0
    failed = by_shard["1-of-4"]
    assert (failed.state, failed.run_id, failed.left) == (FAILED, "r1b", 90 - 45 - 1 - 40)
    assert failed.stop_line == "listed = ...: 10 != 7"
    running = by_shard["2-of-4"]
    assert (running.state, running.run_id, running.holder) == (RUNNING, "r2", "node-1 (pid 42)")
    assert running.left is None
    assert by_shard["3-of-4"].state == NOT_STARTED  # its lease expired: nobody runs it
    assert (status.count(DONE), status.count(FAILED), status.count(RUNNING),
            status.count(NOT_STARTED)) == (1, 1, 1, 1)
    assert status.eta_s is None  # a running shard's work is not known yet
    assert status.lines()[-1] == ("total: 4 shard(s): 1 done, 1 running, 1 failed, "
                                  "1 not started; written 143, dead-lettered 3, left 4; "
                                  "8.0 images/s per shard; time left unknown")


def test_rate_and_time_left_from_finished_runs():
    status = summarize([report("r0", "0/2", 100, 100, 0, elapsed=10.0),
                        report("r1", "1/2", 100, 60, 0, elapsed=10.0, reconciled=False)], {})
    assert status.rate_img_per_s == 10.0  # 200 processed in 20 s of run time
    assert status.left == 40
    assert status.eta_s == 4.0
    assert status.lines()[-1] == ("total: 2 shard(s): 1 done, 0 running, 1 failed, "
                                  "0 not started; written 160, dead-lettered 0, left 40; "
                                  "10.0 images/s per shard; time left 0 min")


def test_a_whole_run_is_the_shard_all():
    status = summarize([report("r", "", 10, 9, 1)], {})
    assert [(s.shard, s.state, s.left) for s in status.shards] == [("all", DONE, 0)]


def test_a_report_marked_failed_shows_its_stop_line_and_counts_what_it_committed():
    stop = "run r1 lost its lease file:///out/_leases/digits@v1/0-of-2.json: not renewed"
    failed = {**report("r1", "0/2", 100, 30, 2, elapsed=8.0), "status": "failed", "stop": stop}
    done = {**report("r2", "1/2", 100, 100, 0, elapsed=10.0), "status": "succeeded"}
    status = summarize([failed, done], {})
    by_shard = {s.shard: s for s in status.shards}
    assert (by_shard["0-of-2"].state, by_shard["0-of-2"].stop_line) == (FAILED, stop)
    assert (by_shard["0-of-2"].written, by_shard["0-of-2"].left) == (30, 68)
    assert by_shard["1-of-2"].state == DONE
    assert status.rate_img_per_s == (32 + 100) / 18.0  # the failed run processed what it committed
    assert status.lines()[1].endswith(f"  {stop}")


def at(minute, second=0):
    return datetime(2026, 12, 1, 10, minute, second, tzinfo=timezone.utc)


def test_the_timeline_has_each_runs_span_by_shard_and_the_objects_finished_over_time():
    chunked = {**report("r0", "0/4", 10, 9, 1, elapsed=600.0, started="2026-12-01T10:00:00+00:00"),
               "chunk_figures": [
                   {"index": 0, "classified": 5, "dead_lettered": 1,
                    "committed_at": "2026-12-01T10:04:00+00:00"},
                   {"index": 1, "classified": 4, "dead_lettered": 0,
                    "committed_at": "2026-12-01T10:09:30+00:00"}]}
    failed = {**report("r1", "1/4", 12, 4, 0, elapsed=300.0, started="2026-12-01T10:02:00"),
              "status": "failed", "stop": "lost its lease"}  # no committed_at: all at its end
    running = StoredLease({**lease("r2", age_s=5.0).body,
                           "started_at": "2026-12-01T10:05:00+00:00"}, "v1", 5.0)
    timeline = backfill_timeline([chunked, failed], {(MODEL, "2-of-4"): running,
                                                     (MODEL, "0-of-4"): lease("old", 500.0)},
                                 now=at(20))
    assert timeline.rows == [(MODEL, "0-of-4"), (MODEL, "1-of-4"), (MODEL, "2-of-4"),
                             (MODEL, "3-of-4")]  # not started: a row without a span
    assert timeline.spans == [RunSpan(MODEL, "0-of-4", "r0", DONE, at(0), at(10)),
                              RunSpan(MODEL, "1-of-4", "r1", FAILED, at(2), at(7)),
                              RunSpan(MODEL, "2-of-4", "r2", RUNNING, at(5), at(20))]
    assert timeline.finished == [(at(0), 0), (at(4), 6), (at(7), 10), (at(9, 30), 14)]
    assert (timeline.listed, timeline.unlisted_shards, timeline.now,
            timeline.estimated_end) == (22, 2, at(20), None)  # the running shard's work unknown


def test_the_estimated_end_is_now_plus_the_status_time_left():
    status_reports = [report("r0", "0/2", 100, 100, 0, elapsed=10.0),
                      report("r1", "1/2", 100, 60, 0, elapsed=10.0, reconciled=False)]
    timeline = backfill_timeline(status_reports, {}, now=at(30))
    assert summarize(status_reports, {}).eta_s == 4.0
    assert timeline.estimated_end == at(30, 4)
    # what each run committed, at its end
    assert timeline.finished == [(at(0), 0), (at(0, 10), 60), (at(0, 10), 160)]
    done = backfill_timeline(status_reports[:1], {}, now=at(30))
    assert done.estimated_end is None  # nothing left


def test_the_command_writes_the_picture_or_says_why_not_with_exit_2(tmp_path, capsys):
    (tmp_path / "_reports").mkdir()
    (tmp_path / "_reports" / "r0.json").write_text(json.dumps(
        report("r0", "0/2", 10, 10, 0, started="2026-12-01T10:00:00+00:00")))
    picture = tmp_path / "backfill.png"
    assert main(["--output", f"file://{tmp_path}", "--picture", str(picture)]) == 0
    assert Image.open(picture).size == (1200, 800)
    assert capsys.readouterr().out.splitlines()[-1].startswith("total: 2 shard(s): 1 done, ")
    nowhere = tmp_path / "missing" / "backfill.png"
    assert main(["--output", f"file://{tmp_path}", "--picture", str(nowhere)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: cannot write the picture: [Errno 2] No such file or directory: '{nowhere}'")
