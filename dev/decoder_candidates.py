"""Time candidate decoders per kind of the upload corpus, against the job's `decode_image`.

Each candidate takes an object's bytes (in memory) to 224x224 RGB on one thread, resize
included: a decoder that gives the whole image (or a DCT-scaled one) goes through the job's
own orientation and halving-then-bilinear resize (`decode._orient`, `decode._resize`); a
thumbnailer (libvips' shrink-on-load) resizes itself. Each image's time is the median of
`--runs` runs; a kind's is the mean over its images. Beside each time, the mean absolute
difference in levels of 255 from `decode_image`'s pixels, so that a faster decoder does not
change the answers unseen. Packages the job does not depend on (pyspng, pyvips) are imported
if found on the path, e.g. installed with `pip install --target DIR` and DIR on PYTHONPATH:

    PYTHONPATH=lib:/tmp/cand .venv/bin/python dev/decoder_candidates.py --runs 5

The job decodes on `input.read_threads` threads of one Python process, so a decoder that
holds the GIL while it works decodes one image at a time however many threads and cores
there are. `--threads N` adds, per candidate, the wall milliseconds an image when N threads
decode `--runs` copies of the kind's images at once, and the speedup over one thread (N on N
idle cores: it scales; 1: it holds the GIL).
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import ExifTags, Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upload_corpus import MIX, UploadKind, upload_corpus, upload_image  # noqa: E402

from imagegraph.imaging import decode  # noqa: E402

SIDE = 224
LIMITS = {"max_bytes": 10**8, "max_pixels": 10**8}
Candidate = Callable[[bytes], np.ndarray]


def _orientation(data: bytes) -> int:
    return Image.open(io.BytesIO(data)).getexif().get(ExifTags.Base.Orientation, 1)


def _finish(pixels: np.ndarray, orientation: int = 1) -> np.ndarray:
    """The job's orientation and resize of decoded RGB pixels to SIDE x SIDE."""
    return decode._resize(decode._orient(pixels, orientation), SIDE, SIDE)


def job(data: bytes) -> np.ndarray:
    """`decode_image` as the job calls it: Pillow's header read, then its chosen decoder."""
    return decode.decode_image(data, SIDE, SIDE, 3, **LIMITS).pixels


def pillow(data: bytes) -> np.ndarray:
    """Pillow alone, as the job decoded PNG and WebP before (for JPEG: draft mode, scaled by
    1/2, 1/4 or 1/8 in the DCT), then the job's resize."""
    image = Image.open(io.BytesIO(data))
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    target = (SIDE, SIDE)
    return _finish(decode._decode_with_pillow(image, 3, target), orientation)


def cv2_imdecode(data: bytes) -> np.ndarray:
    """OpenCV's decoder (libpng, libwebp, libjpeg-turbo) at full size; it applies EXIF
    orientation itself."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return _finish(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def simplejpeg_power_of_two(data: bytes) -> np.ndarray:
    """libjpeg-turbo through simplejpeg, scaled by the largest of 1/8, 1/4, 1/2 that keeps both
    sides at least SIDE, as the job decoded JPEG before."""
    height, width = simplejpeg.decode_jpeg_header(data)[:2]
    scale = next((s for s in (8, 4, 2)
                  if -(-height // s) >= SIDE and -(-width // s) >= SIDE), 1)
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-height // scale),
                                    min_width=-(-width // scale))
    return _finish(pixels, _orientation(data))


def simplejpeg_eighths(data: bytes) -> np.ndarray:
    """libjpeg-turbo through simplejpeg, scaled by the smallest M/8 (M = 1..8) that keeps both
    sides at least SIDE: simplejpeg picks it from `min_height`/`min_width`."""
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=SIDE, min_width=SIDE)
    return _finish(pixels, _orientation(data))


def pyspng_load(data: bytes) -> np.ndarray:
    """libspng through pyspng at full size (the corpus' PNGs are 8-bit RGB)."""
    import pyspng

    return _finish(pyspng.load(data))


def pyvips_load(data: bytes) -> np.ndarray:
    """libvips' loader at full size (sequential access), EXIF orientation applied by it."""
    import pyvips

    image = pyvips.Image.new_from_buffer(data, "", access="sequential").autorot()
    return _finish(image.numpy())


def pyvips_thumbnail(data: bytes) -> np.ndarray:
    """libvips' thumbnail: shrink-on-load (JPEG DCT scaling, WebP scaled decode), then its own
    reduce to exactly SIDE x SIDE (the aspect ratio not kept, as the job's resize)."""
    import pyvips

    image = pyvips.Image.thumbnail_buffer(data, SIDE, height=SIDE, size="force")
    return image.numpy()


CANDIDATES: dict[str, dict[str, Candidate]] = {
    "JPEG": {"decode_image": job, "pillow": pillow,
             "simplejpeg 1/2,1/4,1/8": simplejpeg_power_of_two,
             "simplejpeg M/8": simplejpeg_eighths, "cv2.imdecode": cv2_imdecode,
             "pyvips thumbnail": pyvips_thumbnail},
    "PNG": {"decode_image": job, "pillow": pillow, "cv2.imdecode": cv2_imdecode,
            "pyspng": pyspng_load, "pyvips load": pyvips_load,
            "pyvips thumbnail": pyvips_thumbnail},
    "WEBP": {"decode_image": job, "pillow": pillow, "cv2.imdecode": cv2_imdecode,
             "pyvips load": pyvips_load, "pyvips thumbnail": pyvips_thumbnail},
    "HEIF": {"decode_image": job},
    "AVIF": {"decode_image": job},
}
"""Format -> candidate name -> candidate. HEIF and AVIF have one decoder (libheif): timed as
`decode_image` alone."""


def median_ms(candidate: Candidate, data: bytes, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        candidate(data)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def threaded_ms(candidate: Candidate, images: list[bytes], runs: int, threads: int) -> float:
    """Wall milliseconds an image when `threads` threads decode `runs` copies of `images`."""
    work = images * runs
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(candidate, images))  # every thread started and warm
        start = time.perf_counter()
        list(pool.map(candidate, work))
        return (time.perf_counter() - start) * 1000 / len(work)


def jpeg_kind(size: str) -> UploadKind:
    """A phone-like JPEG kind of `size` 'WIDTHxHEIGHT' pixels (q90 4:2:0, noise 3), one image:
    sizes where the smallest M/8 DCT scale differs from the smallest power of two."""
    width, height = (int(side) for side in size.split("x"))
    return UploadKind(f"photo-{size}", "JPEG", width, height, 1, 1, 90, 3.0)


def measure(scale: int, runs: int, extra: tuple[UploadKind, ...] = (), threads: int = 1
            ) -> list[tuple[str, str, str, float, float, float]]:
    """[(kind, format, candidate, ms, mean abs diff from decode_image, wall ms an image on
    `threads` threads)] on the corpus at `scale` and one image of each `extra` kind;
    candidates whose package is missing are left out."""
    corpus = upload_corpus(seed=0, scale=scale)
    rng = np.random.default_rng(0)
    corpus.update({f"extra/{kind.name}/000": upload_image(kind, rng) for kind in extra})
    rows = []
    for kind in MIX + extra:
        images = [data for key, data in corpus.items() if key.split("/")[1] == kind.name]
        expected = [job(data) for data in images]
        for name, candidate in CANDIDATES.get(kind.format, {}).items():
            try:
                outputs = [candidate(data) for data in images]
            except ImportError:
                continue
            diff = np.mean([np.abs(o.astype(int) - e.astype(int)).mean()
                            for o, e in zip(outputs, expected)])
            ms = np.mean([median_ms(candidate, data, runs) for data in images])
            on_threads = threaded_ms(candidate, images, runs, threads) if threads > 1 else ms
            rows.append((kind.name, kind.format, name, float(ms), float(diff), on_threads))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="corpus scale (1: 13 images)")
    parser.add_argument("--runs", type=int, default=5, help="runs per image; its median counts")
    parser.add_argument("--jpeg-size", action="append", default=[], metavar="WxH",
                        help="also a JPEG of this size (repeatable), e.g. 800x600, whose M/8 "
                             "DCT scale to 224 (3/8) is not a power of two")
    parser.add_argument("--threads", type=int, default=1,
                        help="also time each candidate on this many threads at once "
                             "(default 1: not)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    try:
        import pyvips

        pyvips.cache_set_max(0)  # no result reused between runs
        pyvips.concurrency_set(1)
    except ImportError:
        pass
    threaded = f" ms an image on {args.threads} threads (speedup) |" if args.threads > 1 else ""
    print(f"| kind | format | candidate | decode ms | mean abs diff (levels) |{threaded}")
    print("| --- | --- | --- | ---: | ---: |" + (" ---: |" if threaded else ""))
    extra = tuple(jpeg_kind(size) for size in args.jpeg_size)
    for kind, fmt, name, ms, diff, on_threads in measure(args.scale, args.runs, extra,
                                                         args.threads):
        print(f"| `{kind}` | {fmt} | {name} | {ms:.1f} | {diff:.2f} |"
              + (f" {on_threads:.1f} ({ms / on_threads:.2f}x) |" if threaded else ""))


if __name__ == "__main__":
    main()
