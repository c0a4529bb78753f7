"""A run holds its lease by time: only while its last successful renewal is younger than the
TTL less a third of it, on the run's own clock (injected here), whatever made renewals fail;
and a run admitted beside an expired lease of an overlapping shard ends that lease, so its
holder stops. On the real local-file store; renewals fail for real (its lock file replaced by
a directory, so every change raises `IsADirectoryError`)."""
from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time

import pytest

from imagegraph.config import S3Config
from imagegraph.errors import JobError
from imagegraph.runs.lease import take_lease
from imagegraph.storage.selection import Shard

MODEL = "digits@v1"
TTL_S = 300.0  # the renewer thread never fires during a test; renewals are called directly


class Clock:
    """Monotonic seconds that move only when told; `reads` counts the times it was read."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def lease_dir(output: str) -> str:
    return os.path.join(output.removeprefix("file://"), "_leases", MODEL)


def break_store(output: str) -> None:
    lock = os.path.join(lease_dir(output), ".lock")
    os.remove(lock)
    os.mkdir(lock)


def mend_store(output: str) -> None:
    lock = os.path.join(lease_dir(output), ".lock")
    shutil.rmtree(lock)
    open(lock, "w").close()


@pytest.fixture
def output(tmp_path) -> str:
    return (tmp_path / "out").as_uri()


def test_renewals_failing_until_the_margin_make_ensure_held_raise(output):
    clock = Clock()
    with take_lease(output, MODEL, Shard(0, 2), "r1", TTL_S, S3Config(), clock) as lease:
        break_store(output)
        for _ in range(3):
            clock.now += 60.0
            assert not lease.renew()
            lease.ensure_held()
        clock.now += 19.9  # 199.9 s since the lease was taken: held up to 200 s
        lease.ensure_held()
        clock.now += 0.1
        with pytest.raises(JobError) as lost:
            lease.ensure_held()
        assert str(lost.value) == (
            f"run r1 lost its lease {output}/_leases/{MODEL}/0-of-2.json: not renewed for "
            f"200 s, over the 200 s it is held after a renewal (TTL 300 s); last renewal error: "
            f"IsADirectoryError: [Errno 21] Is a directory: "
            f"'{lease_dir(output)}/.lock'")
        mend_store(output)
        assert not lease.renew()  # once not held, never again: the run stops
        with pytest.raises(JobError, match="^run r1 lost its lease "):
            lease.ensure_held()
    assert os.listdir(lease_dir(output)) == [".lock"]  # released all the same


def test_a_successful_renewal_keeps_the_lease_held(output):
    clock = Clock()
    with take_lease(output, MODEL, None, "r1", TTL_S, S3Config(), clock) as lease:
        break_store(output)
        clock.now += 150.0
        assert not lease.renew()
        mend_store(output)
        assert lease.renew()
        clock.now += 199.0  # 349 s after it was taken, 199 s after its renewal
        lease.ensure_held()
        clock.now += 1.0
        with pytest.raises(JobError, match="not renewed for 200 s, over the 200 s it is held "
                           r"after a renewal \(TTL 300 s\); no renewal tried since the last "
                           "one succeeded$"):
            lease.ensure_held()


def test_a_renewal_that_blocks_past_the_margin_is_named_in_the_stop_line(output):
    """One renewal waits longer than the lease is held (here on the store's lock, held by the
    test; on S3, boto3 retrying 503s `s3.max_attempts` times with backoff): the stop line says
    so, where it used to say `last renewal error: none`."""
    clock = Clock()
    with take_lease(output, MODEL, Shard(0, 2), "r1", TTL_S, S3Config(), clock) as lease:
        with open(os.path.join(lease_dir(output), ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            reads = clock.reads
            renewing = threading.Thread(target=lease.renew)
            renewing.start()
            while clock.reads == reads:  # until the renewal has been sent
                time.sleep(0.01)
            clock.now += 150.0
            lease.ensure_held()
            clock.now += 51.0
            with pytest.raises(JobError) as lost:
                lease.ensure_held()
            assert renewing.is_alive()
        renewing.join()
        assert str(lost.value) == (
            f"run r1 lost its lease {output}/_leases/{MODEL}/0-of-2.json: not renewed for "
            f"201 s, over the 200 s it is held after a renewal (TTL 300 s); a renewal in flight "
            f"for 201 s")
        with pytest.raises(JobError, match="; a renewal in flight for 201 s$"):
            lease.ensure_held()  # its late success does not hold the lease again
    assert os.listdir(lease_dir(output)) == [".lock"]


@pytest.mark.parametrize("newcomer", [Shard(0, 4), Shard(2, 4), None])
def test_an_expired_lease_of_an_overlapping_shard_is_taken_over_from_its_holder(output,
                                                                                newcomer):
    holder = take_lease(output, MODEL, Shard(0, 2), "stalled", TTL_S, S3Config(), Clock())
    path = os.path.join(lease_dir(output), "0-of-2.json")
    expired = os.stat(path).st_mtime - TTL_S - 1  # by the store's clock
    os.utime(path, (expired, expired))
    with take_lease(output, MODEL, Shard(1, 4), "disjoint", TTL_S, S3Config()):
        assert os.path.exists(path)  # shard 1/4 shares nothing with 0/2
    with take_lease(output, MODEL, newcomer, "newcomer", TTL_S, S3Config()):
        assert not os.path.exists(path)
        assert not holder.renew()
        with pytest.raises(JobError) as lost:
            holder.ensure_held()
        assert str(lost.value) == (f"run stalled lost its lease {output}/_leases/{MODEL}/"
                                   "0-of-2.json: another run took it over after it expired")
    holder.release()
    assert sorted(os.listdir(lease_dir(output))) == [".lock"]


def test_a_live_lease_of_an_overlapping_shard_is_left_to_its_holder(output):
    holder = take_lease(output, MODEL, None, "whole", TTL_S, S3Config())
    with pytest.raises(JobError, match="^run whole on "):
        take_lease(output, MODEL, Shard(1, 4), "quarter", TTL_S, S3Config())
    assert holder.renew()
    holder.ensure_held()
    holder.release()
