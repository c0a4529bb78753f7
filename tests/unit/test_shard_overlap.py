"""Which leases conflict: shard names and the overlap of shards of different counts, checked
against the shards real URIs fall in. The leases themselves, on file:// and on moto's S3, are
in tests/integration/test_run_lease.py."""
import itertools

import pytest

from imagegraph.run_lease import shard_from_name, shard_name, shards_overlap
from imagegraph.selection import Shard, shard_of

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
