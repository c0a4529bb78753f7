"""Which leases conflict: shard names and the overlap of shards of different counts, checked
against the shards real URIs fall in. The leases themselves, on file:// and on moto's S3, are
in tests/integration/test_run_lease.py."""
import itertools

import pytest

from imagegraph.runs.lease import shard_from_name, shard_name, shards_overlap
from imagegraph.storage.selection import Shard, shard_of

URIS = [f"s3://bucket/images/{n:05d}.jpg" for n in range(3000)]


@pytest.mark.parametrize("shard, name", [(None, "all"), (Shard(0, 1), "0-of-1"),
                                         (Shard(3, 8), "3-of-8")])
def test_shard_names(shard, name):
    assert shard_name(shard) == name
    assert shard_from_name(name) == shard


def test_overlap_is_whether_some_uri_falls_in_both_shards():
    shards = [Shard(index, count) for count in range(1, 7) for index in range(count)]
    for a, b in itertools.product(shards, repeat=2):
        shared = any(shard_of(uri, a.count) == a.index and shard_of(uri, b.count) == b.index
                     for uri in URIS)
        assert shards_overlap(a, b) == shared, (a, b)


def test_a_whole_run_overlaps_every_shard():
    assert shards_overlap(None, Shard(5, 16)) and shards_overlap(Shard(0, 2), None)
    assert shards_overlap(None, None)


def test_a_lease_lives_for_its_ttl_after_its_last_renewal():
    from imagegraph.runs.lease import StoredLease
    assert StoredLease({"ttl_s": 30}, "v", 29.9).live
    assert not StoredLease({"ttl_s": 30}, "v", 30.0).live
    assert not StoredLease({}, "v", 0.0).live  # no ttl: a lease no run can be holding


def test_an_unreadable_lease_names_no_run_and_a_refusal_says_whose_lease_it_is():
    from imagegraph.runs.lease import StoredLease, _encode, _parse, _refusal
    body = {"run_id": "r1", "host": "h", "pid": 7, "shard": "1/4", "output": "s3://b/out",
            "model": "m@1", "ttl_s": 60}
    assert _parse(_encode(body)) == body
    assert _encode({"b": 1, "a": "é"}) == b'{"a": "\\u00e9", "b": 1}'
    assert _parse(b"{not json") == _parse(b"[1]") == {"run_id": "unknown (unreadable lease)"}
    assert _refusal("s3://b/out/_leases/m@1/1-of-4.json", StoredLease(body, "v", 12.4)) == (
        "run r1 on h (pid 7) is processing shard 1/4 of s3://b/out with m@1: its lease "
        "s3://b/out/_leases/m@1/1-of-4.json was renewed 12 s ago and lives 60 s past each "
        "renewal; let that run finish, or stop it (a cancelled EMR step's YARN application may "
        "still run: yarn application -kill) and run again once the lease has expired")
    whole = _refusal("u", StoredLease({**body, "shard": ""}, "v", 0.0))
    assert "is processing every shard of s3://b/out" in whole


def test_an_unreachable_lease_store_is_named_with_the_error():
    from imagegraph.runs.lease import _unreachable
    assert str(_unreachable("s3://b/out/_leases/m@1", TimeoutError("read timed out"))) == (
        "cannot take the run's lease under s3://b/out/_leases/m@1: TimeoutError: read timed out")
