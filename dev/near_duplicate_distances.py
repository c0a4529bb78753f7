"""How far apart re-uploads and unrelated photos are to the link job's perceptual hash: the
Hamming distances (bits of 64) of each re-upload of scikit-image's photos to the photo
(`near_duplicate_photos.copies`), per kind of copy, and among unrelated photos (the photos'
pieces and the photos themselves, each pair of different photos), hashed as inference hashes
them (`perceptual_hash` on `decode_image`'s pixels at the model's input size). Also how even the
hash's bits are: each bit's share of ones, and how often unrelated hashes' 32-bit and 16-bit
bands lie within a few bits of each other, against uniform bits.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from math import comb
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from near_duplicate_photos import ALL_COPIES, PHOTOS, copies, photo, pieces  # noqa: E402

from imagegraph.imaging.decode import decode_image  # noqa: E402
from imagegraph.imaging.perceptual_hash import (  # noqa: E402
    HASH_BITS,
    hamming_distance,
    perceptual_hash,
)


def hashed(data: bytes, size: int, channels: int) -> int:
    """The hash of `data` decoded as for a `size` x `size` model of `channels` channels."""
    return perceptual_hash(decode_image(data, size, size, channels, 10**8, 10**9).pixels)


def percentile(values: list[int], share: float) -> float:
    """The `share` (0..100) percentile of `values`."""
    return float(np.percentile(values, share))


def band_distances(a: int, b: int, bands: int) -> list[int]:
    """The Hamming distance of each of `bands` equal bands of two hashes, lowest bits first."""
    width = HASH_BITS // bands
    mask = (1 << width) - 1
    return [hamming_distance((a >> (n * width)) & mask, (b >> (n * width)) & mask)
            for n in range(bands)]


def measure(size: int, channels: int, per_side: int) -> tuple[dict, list]:
    """({copy: [distance of each photo's copy to the photo]}, [(name, hash) of each unrelated
    picture: the photos as JPEG, their quarters and their `per_side` x `per_side` pieces]),
    hashed from pixels decoded at `size` x `size` x `channels`."""
    by_copy: dict[str, list[int]] = {name: [] for name in ALL_COPIES if name != "jpeg"}
    unrelated: list[tuple[str, int]] = []
    for name in PHOTOS:
        pixels = photo(name)
        hashes = {copy: hashed(data, size, channels) for copy, data in copies(pixels).items()}
        for copy, distances in by_copy.items():
            distances.append(hamming_distance(hashes["jpeg"], hashes[copy]))
        unrelated.append((name, hashes["jpeg"]))
        for pieces_per_side in (2, per_side):
            unrelated.extend((f"{name}/{piece}", hashed(data, size, channels))
                             for piece, data in pieces(pixels, pieces_per_side).items())
    return by_copy, unrelated


def unrelated_pairs(unrelated: list) -> list[tuple[int, int]]:
    """The pairs of hashes of `unrelated` ((name, hash), a piece named photo/piece) of
    different photos: a photo's pieces are not compared with each other nor with it."""
    return [(a, b) for (na, a), (nb, b) in itertools.combinations(unrelated, 2)
            if na.split("/")[0] != nb.split("/")[0]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="model input side (default 224)")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3),
                        help="model input channels (default 3)")
    parser.add_argument("--pieces", type=int, default=4,
                        help="unrelated pieces per side of each photo (default 4: sixteenths)")
    args = parser.parse_args()

    by_copy, unrelated = measure(args.size, args.channels, args.pieces)
    print(f"hash of pixels decoded at {args.size}x{args.size}x{args.channels}; "
          f"{len(PHOTOS)} photos")
    print(f"{'copy':<14}{'max':>5}{'p95':>7}{'p99':>7}  distances")
    for copy, distances in by_copy.items():
        print(f"{copy:<14}{max(distances):>5}{percentile(distances, 95):>7.1f}"
              f"{percentile(distances, 99):>7.1f}  {sorted(distances)}")
    every = [d for distances in by_copy.values() for d in distances]
    print(f"{'every copy':<14}{max(every):>5}{percentile(every, 95):>7.1f}"
          f"{percentile(every, 99):>7.1f}  ({len(every)} pairs)")

    pairs = unrelated_pairs(unrelated)
    distances = [hamming_distance(a, b) for a, b in pairs]
    print(f"unrelated: {len(unrelated)} pictures, {len(pairs)} pairs of different photos: "
          f"min {min(distances)}, p1 {percentile(distances, 1):.1f}, "
          f"p5 {percentile(distances, 5):.1f}, median {percentile(distances, 50):.1f}")
    print(f"unrelated pairs within 8 bits: {sum(d <= 8 for d in distances)}, "
          f"within 12: {sum(d <= 12 for d in distances)}")

    bits = np.array([[(h >> n) & 1 for n in range(HASH_BITS)] for _, h in unrelated])
    ones = bits.mean(axis=0)
    print(f"share of ones per bit (bit 0 lowest): min {ones.min():.2f} (bit {ones.argmin()}), "
          f"max {ones.max():.2f} (bit {ones.argmax()}); bits with a share outside 0.3..0.7: "
          f"{int(((ones < 0.3) | (ones > 0.7)).sum())}")
    for bands in (2, 4):
        width = HASH_BITS // bands
        per_band = np.array([band_distances(a, b, bands) for a, b in pairs])
        for radius in range(4):
            uniform = sum(comb(width, k) for k in range(radius + 1)) / 2**width
            shares = (per_band <= radius).mean(axis=0)
            print(f"{bands} bands of {width} bits within {radius}: share of unrelated band "
                  f"pairs per band {[f'{s:.2e}' for s in shares]}, uniform bits {uniform:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
