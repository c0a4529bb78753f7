"""Similar images: the random-hyperplane signature of embeddings and the banded join that pairs
each new image with its nearest, on a local Spark, against brute force."""

import re

import numpy as np
import pytest

from imagegraph.config import LinkConfig
from imagegraph.imaging.perceptual_hash import hamming_distance
from imagegraph.link.pairs import signed_embeddings, similar_images


def similar(new, every, k: int, link: LinkConfig):
    """`similar_images` of `new` against `every` (uri, embedding), signed at `link`'s settings."""
    def signed(frame):
        return signed_embeddings(frame, link.seed, link.similar_bands, link.similar_band_bits)

    return similar_images(signed(new), signed(every), k, link.similar_max_distance,
                          link.similar_band_bits, link.similar_band_radius)


def embeddings(count: int, seed: int) -> list[tuple[str, list[float]]]:
    """`count` random 128-dimension vectors and, for each, a copy nudged by noise (about 0.2
    away once both are unit length) and one scaled by 3 (the same direction)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, base in enumerate(rng.standard_normal((count, 128))):
        rows += [(f"u{n:03d}", base.tolist()),
                 (f"u{n:03d}-near", (base + 0.2 * rng.standard_normal(128)).tolist()),
                 (f"u{n:03d}-scaled", (3 * base).tolist())]
    return rows


def unit_distance(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a / np.linalg.norm(a) - b / np.linalg.norm(b)))


def test_each_new_image_finds_its_nearest_as_brute_force_does(spark):
    rows = embeddings(40, seed=1)
    every = spark.createDataFrame(rows, "uri string, embedding array<float>")
    new = every.where("uri < 'u010'")
    link = LinkConfig()
    pairs = similar(new, every, 2, link)
    found = {(r.uri, r.other): r.distance for r in pairs.found.collect()}
    vectors = dict(rows)
    expected = set()
    for uri in (u for u, _ in rows if u < "u010"):
        nearest = sorted((unit_distance(vectors[uri], v), other) for other, v in rows
                         if other != uri)[:2]
        expected |= {tuple(sorted((uri, other))) for d, other in nearest
                     if d <= link.similar_max_distance}
    assert set(found) == expected
    for (a, b), distance in found.items():
        assert distance == pytest.approx(unit_distance(vectors[a], vectors[b]), abs=1e-5)
    related_band_matches = new.count() * 2 * link.similar_bands  # each near and scaled copy
    assert 0 < pairs.pairs_compared <= related_band_matches  # unrelated pairs: none met


def test_the_bands_are_the_sides_of_each_hyperplane(spark):
    from imagegraph.link.pairs import embedding_bands

    rng = np.random.default_rng(2)
    base = rng.standard_normal(16)
    frame = spark.createDataFrame([("a", base.tolist()), ("scaled", (5 * base).tolist()),
                                   ("opposite", (-base).tolist()), ("zero", [0.0] * 16)],
                                  "uri string, embedding array<float>")
    rows = {r.uri: r for r in frame.select("uri", embedding_bands("embedding", 7, 3, 20)
                                           .alias("s")).select("uri", "s.*").collect()}
    assert rows["a"].bands == rows["scaled"].bands
    assert [a ^ b for a, b in zip(rows["a"].bands, rows["opposite"].bands)] == [2**20 - 1] * 3
    assert rows["zero"].bands == [0, 0, 0] and rows["zero"].unit == [0.0] * 16
    assert np.linalg.norm(rows["a"].unit) == pytest.approx(1.0, abs=1e-6)
    planes = np.random.default_rng(7).standard_normal((60, 16))
    sides = "".join("1" if p @ base > 0 else "0" for p in planes)
    assert rows["a"].bands == [int(sides[band * 20:band * 20 + 20], 2) for band in range(3)]


def test_centring_spreads_the_signatures_of_non_negative_embeddings():
    """Post-ReLU embeddings share one positive mean: uncentred, unrelated ones sit in the same
    corner and their signatures agree in most bits; less the model's centre, they differ in
    about half (32 of 64), as unrelated directions should."""
    from imagegraph.link.pairs import hyperplane_bands
    from imagegraph.model.artifact import ModelMetadata

    rng = np.random.default_rng(3)
    population = np.maximum(rng.uniform(0.0, 2.0, 128) + rng.standard_normal((200, 128)), 0)
    metadata = ModelMetadata("m", "v1", 8, 8, 1, "scale_0_1", ("a", "b"),
                             embedding_centre=tuple(map(float, population.mean(axis=0))))

    def bits_apart(vectors: np.ndarray) -> list[int]:
        bands, _ = hyperplane_bands(vectors, LinkConfig().seed, 2, 32)
        return [sum(hamming_distance(int(a), int(b)) for a, b in zip(bands[i], bands[j]))
                for i in range(len(vectors)) for j in range(i + 1, len(vectors))]

    assert (population >= 0).all()
    assert bits_apart(population[:2]) == [14]
    assert bits_apart(metadata.centred(population[:2])) == [35]
    uncentred, centred = bits_apart(population), bits_apart(metadata.centred(population))
    assert (np.median(uncentred), max(uncentred)) == (15.0, 28)
    assert (np.median(centred), min(centred)) == (32.0, 16)


def test_unrelated_images_seldom_meet_at_the_defaults(spark):
    """At the defaults a new image and an unrelated one match in a band with probability
    16 x 25 / 2^24 (16 bands of 24 bits, each probed with the 25 values within 1 bit): about
    2,400 band matches a new image against 100 million images. The former 4 bands of 16 bits
    within 2 bits met 4 x 137 / 65,536 (0.84%, 0.8 million a new image there)."""
    from imagegraph.link.pairs import band_matches_per_image

    rng = np.random.default_rng(5)
    rows = [(f"u{n:04d}", vector.tolist())
            for n, vector in enumerate(rng.standard_normal((2000, 128)))]
    every = spark.createDataFrame(rows, "uri string, embedding array<float>")
    new = every.where("uri < 'u0200'")
    link = LinkConfig()
    expected = band_matches_per_image(link.similar_bands, link.similar_band_bits,
                                      link.similar_band_radius)
    assert expected == 16 * 25 / 2**24
    pairs = similar(new, every, link.similar_k, link)
    assert pairs.found.count() == 0
    # 200 x 1,999 x 2.4e-5 = 9.5 expected (two new images that meet do so both ways)
    assert pairs.pairs_compared == 17


def test_the_band_join_never_broadcasts_its_probes(spark):
    """On small inputs adaptive execution turned the band join into a broadcast join (a hash
    table of one side built in the driver); at 8,000 images, each row carrying its embedding
    (the probes: bands x values within the radius, 548 an image then), that filled the
    driver's heap. The band join is a sort-merge join whatever sizes Spark estimates or meets,
    and no embedding goes through it."""
    every = spark.createDataFrame(embeddings(4, seed=4), "uri string, embedding array<float>")
    link = LinkConfig()
    pairs = similar(every, every, 2, link)
    pairs.found.collect()  # adaptive execution chooses its joins again on the sizes it met
    plan = pairs.found._jdf.queryExecution().executedPlan().toString()
    assert "isFinalPlan=true" in plan
    assert set(re.findall(r"(\w+Join) \[band", plan)) == {"SortMergeJoin"}  # final, initial
