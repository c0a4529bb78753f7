"""Similarity on real embeddings: how far apart the link job finds labelled pairs of the demo's
digits, with the embeddings as the model gives them (post-ReLU, all non-negative) and centred
on the validation images' mean as training now stores it (`ModelMetadata.centred`).

The network is the demo's (`small_cnn`, 32x32 grayscale, `training.*` of conf/local.yaml:
10 epochs, batch 64, learning rate 0.002), trained here with Keras on the driver, not through
jobs/train.py; the images are the demo's (`sample_images.digit_images`: every 6th digit held
out), decoded as inference decodes them. Every 10th training digit is the validation split
whose mean embedding is the centre. Pairs, among the 300 held-out digits: each digit and its
own PNG saved again as a JPEG at quality 50 (same image), two digits of the same class
(similar), of different classes (unrelated). Distances are the link job's: the Euclidean
distance of the unit-length embeddings (0..2, `link.similar_max_distance`) and the bits in
which their random-hyperplane bands differ (`link.pairs.hyperplane_bands` at the default
`link.similar_*` and `link.seed`).

    PYTHONPATH=lib .venv/bin/python dev/embedding_pairs.py
"""
from __future__ import annotations

import io
import itertools
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sample_images  # noqa: E402

from imagegraph.config import LinkConfig  # noqa: E402
from imagegraph.imaging.decode import decode_image  # noqa: E402
from imagegraph.model.artifact import ModelMetadata  # noqa: E402
from imagegraph.model.cache import LoadedModel  # noqa: E402
from imagegraph.train.backbones import build_classifier  # noqa: E402

SIZE = sample_images.DIGIT_SIZE
DISTANCES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def decoded(images: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 pixels (n, 32, 32, 1) as inference decodes them, and the class of each."""
    keys = sorted(images)
    pixels = [decode_image(images[key], SIZE, SIZE, 1, 10**7, 10**8).pixels for key in keys]
    return np.stack(pixels), np.array([int(key.split("/")[0]) for key in keys])


def jpeg_again(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0]).save(buffer, format="JPEG", quality=50)
    return buffer.getvalue()


def train(pixels: np.ndarray, labels: np.ndarray):
    """The demo's small CNN trained on `pixels` (uint8) with its settings, seeded."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(7)
    model = build_classifier("small_cnn", SIZE, SIZE, 1, 10, None)
    model.compile(tf.keras.optimizers.Adam(0.002), "sparse_categorical_crossentropy")
    model.fit(pixels.astype(np.float32) / 255.0, labels, batch_size=64, epochs=10, verbose=0)
    return model


def distances(vectors: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """Per pair: the unit-length distance, the band bits that differ (all bands), and whether
    the link job's banded join at the default `link.similar_*` compares the pair (a band
    within `similar_band_radius` bits)."""
    from imagegraph.link.pairs import hyperplane_bands

    link = LinkConfig()
    bands, units = hyperplane_bands(vectors, link.seed, link.similar_bands,
                                    link.similar_band_bits)
    unit = np.linalg.norm(units[pairs[:, 0]] - units[pairs[:, 1]], axis=1)
    differ = bands[pairs[:, 0]] ^ bands[pairs[:, 1]]
    band_bits = np.vectorize(lambda bits: int(bits).bit_count())(differ)
    compared = np.min(band_bits, axis=1) <= link.similar_band_radius
    return unit, np.sum(band_bits, axis=1), compared


def report(name: str, vectors: np.ndarray, same_image: np.ndarray, same_class: np.ndarray,
           other_class: np.ndarray) -> None:
    print(f"\n{name}")
    measured = {}
    for kind, pairs in (("same image", same_image), ("same class", same_class),
                        ("other class", other_class)):
        unit, bits, compared = measured[kind] = distances(vectors, pairs)
        print(f"  {kind:12s} {len(pairs):6d} pairs: distance median {np.median(unit):.3f} "
              f"(5%: {np.percentile(unit, 5):.3f}, 95%: {np.percentile(unit, 95):.3f}), "
              f"signature bits median {np.median(bits):.0f} (5%: {np.percentile(bits, 5):.0f}, "
              f"95%: {np.percentile(bits, 95):.0f}), compared by the join {compared.mean():.1%}")
    print("  within   distance alone: precision recall | joined and within: precision recall"
          " (same image)")
    for distance in DISTANCES:
        line = f"  {distance:6.2f}"
        for joined in (False, True):
            found = {kind: (unit <= distance) & (compared | (not joined))
                     for kind, (unit, _, compared) in measured.items()}
            similar = int(found["same image"].sum() + found["same class"].sum())
            wrong = int(found["other class"].sum())
            line += (f"   {similar / max(1, similar + wrong):9.4f} "
                     f"{found['same class'].mean():6.4f}")
        print(f"{line} ({found['same image'].mean():.4f})")


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    train_images, held_out = sample_images.digit_images()
    pixels, labels = decoded(train_images)
    validation = np.arange(len(pixels)) % 10 == 0
    model = train(pixels[~validation], labels[~validation])
    metadata = ModelMetadata("digits-cnn", "pairs", SIZE, SIZE, 1, "scale_0_1",
                             tuple(str(d) for d in range(10)))
    loaded = LoadedModel(model, metadata, 64, embedding=True)

    def embed(images: np.ndarray) -> np.ndarray:
        return np.concatenate([loaded.predict(images[start:start + 64])[1]
                               for start in range(0, len(images), 64)])

    centre = embed(pixels[validation]).mean(axis=0)
    test_pixels, test_labels = decoded(held_out)
    again = np.stack([decode_image(jpeg_again(p), SIZE, SIZE, 1, 10**7, 10**8).pixels
                      for p in test_pixels])
    raw = embed(np.concatenate([test_pixels, again]))
    count = len(test_pixels)
    same_image = np.array([(n, count + n) for n in range(count)])
    pairs = np.array(list(itertools.combinations(range(count), 2)))
    same = test_labels[pairs[:, 0]] == test_labels[pairs[:, 1]]
    print(f"{count} held-out digits, {int(validation.sum())} validation digits for the centre, "
          f"{int((~validation).sum())} trained on; embedding: {raw.shape[1]} features, "
          f"{(raw >= 0).mean():.0%} of values >= 0, {(centre > 0).sum()} features with a "
          f"positive mean")
    for name, vectors in (("uncentred (as before)", raw),
                          ("centred on the validation mean",
                           replace(metadata, embedding_centre=tuple(map(float, centre)))
                           .centred(raw))):
        report(name, vectors, same_image, pairs[same], pairs[~same])


if __name__ == "__main__":
    main()
