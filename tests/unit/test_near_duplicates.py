"""Near-duplicate detection, end to end from bytes: scikit-image's photos re-encoded, resized
and cropped a little, plus unrelated photos (the quarters of each photo), made by
`dev/near_duplicate_photos.py`, decoded as for a 32x32 grayscale model and a 224x224 RGB one,
hashed (`perceptual_hash`) and paired by the link job's banded join (`linking.near_duplicates`)
on a local Spark, with the default settings.
Also the hash and the join against brute force."""
import itertools
import random

import numpy as np
import pytest
from near_duplicate_photos import encoded, photo_set

from imagegraph.config import LinkConfig
from imagegraph.imaging.decode import decode_image
from imagegraph.imaging.perceptual_hash import hamming_distance, perceptual_hash
from imagegraph.link.pairs import flip_masks, near_duplicates


@pytest.fixture(scope="module")
def test_set() -> dict[tuple[str, str], bytes]:
    """{(group, name): bytes}: each photo's 7 copies share a group; each quarter is a group
    of its own (`near_duplicate_photos.photo_set`). 16 photos: 112 copies, 64 unrelated
    photos, 336 duplicate pairs."""
    return photo_set()


@pytest.mark.parametrize("height, width, channels", [(32, 32, 1), (224, 224, 3)])
def test_near_duplicates_recall_and_precision_are_at_least_95_percent(
        spark, test_set, height, width, channels):
    rows = [(f"s3://b/{group}/{name}", group, perceptual_hash(
        decode_image(data, height, width, channels, 10**8, 10**9).pixels))
        for (group, name), data in test_set.items()]
    frame = spark.createDataFrame(rows, "uri string, grp string, phash long")
    link = LinkConfig()
    found = near_duplicates(frame, frame, link.near_duplicate_bands,
                            link.near_duplicate_band_radius,
                            link.near_duplicate_max_distance).found.collect()
    group = {uri: grp for uri, grp, _ in rows}
    true_pairs = {(a, b) for (a, ga, _), (b, gb, _) in itertools.combinations(rows, 2)
                  if ga == gb}
    found_pairs = {tuple(sorted((row.uri, row.other))) for row in found}
    hits = {pair for pair in found_pairs if group[pair[0]] == group[pair[1]]}
    recall = len(hits) / len(true_pairs)
    precision = len(hits) / len(found_pairs)
    assert len(true_pairs) == 336
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)


@pytest.mark.parametrize("radius", [0, 1])
def test_the_banded_join_finds_exactly_the_pairs_with_a_band_within_the_radius(spark, radius):
    rng = random.Random(3)
    bases = [rng.getrandbits(64) for _ in range(30)]
    hashes = bases + [base ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64))
                      for base in bases] + [base ^ rng.getrandbits(64) for base in bases[:10]]
    signed = [h - (1 << 64) if h >= 1 << 63 else h for h in hashes]
    rows = [(f"u{n:03d}", h) for n, h in enumerate(signed)]
    every = spark.createDataFrame(rows, "uri string, phash long")
    new = every.where("uri >= 'u040'")
    pairs = near_duplicates(new, every, 8, radius, 20)

    def bands(h):
        return [(h >> (8 * n)) & 0xFF for n in range(8)]

    expected = {tuple(sorted((a, b))): hamming_distance(ha, hb)
                for a, ha in rows if a >= "u040" for b, hb in rows
                if a != b and hamming_distance(ha, hb) <= 20
                and any(hamming_distance(x, y) <= radius
                        for x, y in zip(bands(ha & (2**64 - 1)), bands(hb & (2**64 - 1))))}
    assert {(r.uri, r.other): r.distance for r in pairs.found.collect()} == expected
    compared = sum(1 for a, ha in rows if a >= "u040" for b, hb in rows if a != b
                   for x, y in zip(bands(ha & (2**64 - 1)), bands(hb & (2**64 - 1)))
                   if hamming_distance(x, y) <= radius)
    assert pairs.pairs_compared == compared


def test_the_hash_is_64_signed_bits_that_survive_a_reencode_but_not_another_photo():
    import skimage.data

    def hashed(pixels, quality):
        return perceptual_hash(decode_image(encoded(pixels, quality=quality), 32, 32, 1,
                                            10**8, 10**9).pixels)

    astronaut, coffee = skimage.data.astronaut(), skimage.data.coffee()
    assert hamming_distance(hashed(astronaut, 90), hashed(astronaut, 40)) <= 2
    assert hamming_distance(hashed(astronaut, 90), hashed(coffee, 90)) >= 20
    values = [perceptual_hash(np.full((32, 32, 1), 0, np.uint8)),
              hashed(astronaut, 90), hashed(coffee, 90)]
    assert all(-(1 << 63) <= value < (1 << 63) for value in values)


def test_flip_masks_are_every_variant_within_the_radius():
    assert flip_masks(4, 0) == [0]
    assert flip_masks(4, 1) == [0, 1, 2, 4, 8]
    assert len(flip_masks(16, 2)) == 1 + 16 + 120 == len(set(flip_masks(16, 2)))


def test_hamming_distance_counts_differing_bits_of_signed_hashes():
    assert hamming_distance(0, 0) == 0
    assert hamming_distance(-1, 0) == 64
    assert hamming_distance(-1, (1 << 63) - 1) == 1
    assert hamming_distance(0b1011, 0b0110) == 3
