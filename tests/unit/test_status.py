"""The backfill status from run reports and leases as they are written (no servers)."""
from imagegraph.runs.lease import StoredLease
from imagegraph.runs.status import DONE, FAILED, NOT_STARTED, RUNNING, summarize

MODEL = "digits@v1"


def report(run_id, shard, listed, written, dead, skipped=0, elapsed=10.0, reconciled=True,
           started="2026-12-01T10:00:00"):
    return {"run_id": run_id, "model": MODEL, "shard": shard, "listed": listed,
            "committed_predictions": written, "committed_dead_letters": dead,
            "skipped_done": skipped, "elapsed_s": elapsed, "reconciled": reconciled,
            "started_at": started, "dead_lettered_by_reason": {"decode: truncated": dead},
            "disagreements": [] if reconciled else ["listed = ...: 10 != 7"]}


def lease(run_id, age_s, ttl_s=60.0):
    return StoredLease({"run_id": run_id, "host": "node-1", "pid": 42, "ttl_s": ttl_s},
                       "v1", age_s)


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
