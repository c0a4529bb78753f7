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
from near_duplicate_distances import measure, unrelated_pairs
from near_duplicate_photos import encoded, photo_set

from imagegraph.config import LinkConfig
from imagegraph.imaging.decode import decode_image
from imagegraph.imaging.perceptual_hash import HASH_BITS, hamming_distance, perceptual_hash
from imagegraph.link.pairs import band_matches_per_image, flip_masks, near_duplicates


@pytest.fixture(scope="module")
def test_set() -> dict[tuple[str, str], bytes]:
    """{(group, name): bytes}: each photo's 7 copies share a group; each quarter is a group
    of its own (`near_duplicate_photos.photo_set`). 16 photos: 112 copies, 64 unrelated
    photos, 336 duplicate pairs."""
    return photo_set()


@pytest.mark.parametrize("height, width, channels, least_recall, least_uncropped_recall", [
    (32, 32, 1, 0.69, 0.88), (224, 224, 3, 0.75, 1.0)])
def test_near_duplicates_at_the_defaults_find_the_uncropped_copies_and_no_unrelated_photo(
        spark, test_set, height, width, channels, least_recall, least_uncropped_recall):
    """Recall over the 336 duplicate pairs, over the 160 of them without a cropped copy, and
    precision (every pair found is of one photo)."""
    rows = [(f"s3://b/{group}/{name}", group, perceptual_hash(
        decode_image(data, height, width, channels, 10**8, 10**9).pixels))
        for (group, name), data in test_set.items()]
    frame = spark.createDataFrame(rows, "uri string, grp string, phash long")
    link = LinkConfig()
    found = near_duplicates(frame, frame, link.near_duplicate_bands,
                            link.near_duplicate_band_radius,
                            link.near_duplicate_max_distance).found.collect()
    group = {uri: grp for uri, grp, _ in rows}
    true_pairs = {tuple(sorted((a, b))) for (a, ga, _), (b, gb, _)
                  in itertools.combinations(rows, 2) if ga == gb}
    uncropped = {pair for pair in true_pairs if "crop" not in "".join(pair)}
    found_pairs = {tuple(sorted((row.uri, row.other))) for row in found}
    hits = {pair for pair in found_pairs if group[pair[0]] == group[pair[1]]}
    assert (len(true_pairs), len(uncropped)) == (336, 160)
    recall, uncropped_recall = len(hits) / 336, len(hits & uncropped) / 160
    assert recall >= least_recall and uncropped_recall >= least_uncropped_recall, (
        recall, uncropped_recall)
    assert hits == found_pairs


def test_reuploads_but_crops_are_within_4_bits_and_unrelated_photos_beyond_7():
    """At 224x224 RGB: JPEG at quality 70 and 40, PNG, WebP, half and 1.5 times the size and
    an EXIF-rotated copy are at most 4 bits from the photo, crops up to 14; of 52,920 pairs of
    pictures of different photos none is within 7 bits (`dev/near_duplicate_distances.py`)."""
    by_copy, unrelated = measure(224, 3, 4)
    crops = ("cropped", "cropped-left")
    assert max(max(d) for copy, d in by_copy.items() if copy not in crops) <= 4
    assert max(max(by_copy[copy]) for copy in crops) <= 14
    pairs = unrelated_pairs(unrelated)
    assert len(pairs) == 52_920
    assert min(hamming_distance(a, b) for a, b in pairs) > 7


def test_the_defaults_find_every_pair_within_the_distance_and_seldom_meet_unrelated_hashes():
    """bands x (radius + 1) > the distance; 100 million unrelated (even) hashes make at most
    300 band matches with a new one (256: 2 x 5,489 / 2^32 of them), from at most 11,000 probe
    rows (10,978)."""
    link = LinkConfig()
    bands, radius = link.near_duplicate_bands, link.near_duplicate_band_radius
    assert bands * (radius + 1) > link.near_duplicate_max_distance
    bits = HASH_BITS // bands
    assert band_matches_per_image(bands, bits, radius) * 100_000_000 <= 300
    assert bands * len(flip_masks(bits, radius)) <= 11_000


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
