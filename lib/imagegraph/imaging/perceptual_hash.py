"""Perceptual hashes of decoded images and the Hamming distance between them.

Pure functions, no Spark. The hash is the DCT hash of `imagehash.phash`, computed on the pixels
the decoder already produced for the model, so it costs no second decode:

pixels (uint8, the model's input size) -> grayscale -> 32x32 (area average) -> 2-D DCT -> the
8x8 lowest frequencies -> one bit each, set when above their median -> 64 bits as a signed
64-bit integer (what Parquet's int64 and Spark's LongType hold; only the bits matter).

Re-encoding, resizing and cropping a few percent move few of the 64 bits; unrelated photos
differ in about half of them.
"""
from __future__ import annotations

import cv2
import numpy as np

HASH_BITS = 64
_SIDE = 32          # the grayscale image the DCT reads
_LOW = 8            # the lowest 8x8 frequencies make the 64 bits


def perceptual_hash(pixels: np.ndarray) -> int:
    """The 64-bit DCT hash of uint8 `pixels` (height, width, 1 or 3 channels, RGB), as a
    signed 64-bit int."""
    gray = pixels[:, :, 0] if pixels.shape[2] == 1 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:_LOW, :_LOW]
    bits = np.packbits((low > np.median(low)).ravel())
    value = int.from_bytes(bits.tobytes(), "big")
    return value - (1 << HASH_BITS) if value >= 1 << (HASH_BITS - 1) else value


def hamming_distance(hash_a: int, hash_b: int) -> int:
    """How many of the 64 bits of two hashes differ."""
    return ((hash_a ^ hash_b) & ((1 << HASH_BITS) - 1)).bit_count()
