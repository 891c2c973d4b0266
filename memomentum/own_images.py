"""The images of a data set given by a path, decoded with Pillow into one uint8 array (N, C, S, S), once.

Any format Pillow reads (PNG, JPEG, BMP, WebP, GIF: its first frame, TIFF, ...) in any mode: L, RGB, RGBA and LA (the
alpha dropped), P (through its palette), CMYK, YCbCr, 1, and 16- or 32-bit grey (I;16, I: scaled to 0..255). Each is
converted to the network's channels (1: grey, 3: RGB) and resized to S x S (bilinear; an image already S x S is taken
as it is, so the pixels of a data set exported to files come back exactly). A file that is not an image, is cut
short, or exceeds Pillow's decompression-bomb limit is an error naming it, or, with `skip`, left out and counted.

`probe` reads only the headers (sizes and modes: the default image size and channels); `decode` the pixels. Both
results are cached under $MEMOMENTUM_CACHE/own/, keyed by the index's fingerprint (and, for the pixels, the decode
settings), so a second trial, a second sweep or a resume decodes nothing.
"""
import io
import os
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from memomentum.atomic import atomic_savez, load_npz
from memomentum.errors import DataError
from memomentum.noise import default_cache_dir
from memomentum.own_index import OwnIndex

GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
PROGRESS_EVERY_S = 10.0  # seconds between progress lines of a long decode


@dataclass(frozen=True)
class Probe:
    sides: np.ndarray  # int64 (N,): each image's longer side
    grey: np.ndarray  # bool (N,): whether its mode is grey


@dataclass(frozen=True)
class Decoded:
    images: np.ndarray  # uint8 (M, C, S, S): the images that decoded (all of them unless skipping)
    kept: np.ndarray  # int64 (M,): their positions in the index
    skipped: np.ndarray  # int64: positions left out (skip_bad_images)


def cache_path(kind: str, key: str) -> str:
    return os.path.join(default_cache_dir(), "own", f"{key}-{kind}.npz")


def _open(index: OwnIndex, i: int, manifest_images: Optional[list]):
    """The image of example i, opened by Pillow (lazily: its header only)."""
    from PIL import Image

    if index.sources[i]:
        return Image.open(index.sources[i])
    return Image.open(io.BytesIO(manifest_images[index.rows[i]]))


def _manifest_images(index: OwnIndex) -> Optional[list]:
    """The `image` column of a manifest that holds the images' bytes (None when the rows name files)."""
    if index.kind != "manifest" or all(index.sources):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = pq.read_table(index.path, columns=["image"]).column("image").combine_chunks()
    if pa.types.is_struct(column.type):
        column = column.field("bytes")
    return column.to_pylist()


def _bad(index: OwnIndex, i: int, exc: BaseException) -> str:
    from PIL import Image

    what = index.sources[i] or f"{index.path}, {index.names[i]}"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"{what} is larger than Pillow's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS:,} pixels); "
                f"shrink it, remove it, or skip it (skip_bad_images: true)")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 40:
        return f"{what} is a symlink loop; replace it with the image file, or skip it (skip_bad_images: true)"
    return (f"{what} is not an image Pillow can read, or is cut short ({type(exc).__name__}: {str(exc)[:100]}); "
            f"replace or remove it, or skip it (skip_bad_images: true)")


def probe(index: OwnIndex, skip: bool, say: Callable[[str], None] = lambda line: None) -> Probe:
    """Each image's longer side and whether it is grey, from its header (cached)."""
    path = cache_path("probe", index.fingerprint)
    cached = load_npz(path, ("sides", "grey"), lambda z: len(z["sides"]) == len(index.names))
    if cached is not None:
        return Probe(cached["sides"], cached["grey"])
    from PIL import Image

    manifest_images = _manifest_images(index)
    sides, grey = np.zeros(len(index.names), dtype=np.int64), np.zeros(len(index.names), dtype=bool)
    clock = _Clock(say, "reading image headers", len(index.names))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for i in range(len(index.names)):
            try:
                with _open(index, i, manifest_images) as image:
                    w, h = image.size
                    if w * h > Image.MAX_IMAGE_PIXELS:
                        raise Image.DecompressionBombError(f"{w * h} pixels")
                    sides[i], grey[i] = max(w, h), image.mode in GREY_MODES or image.mode == "P" and _grey_palette(image)
            except Exception as exc:  # not an image, a bomb, a loop
                if not skip:
                    raise DataError(_bad(index, i, exc)) from None
                sides[i], grey[i] = 0, True
            clock.tick(i + 1)
    atomic_savez(path, sides=sides, grey=grey)
    return Probe(sides, grey)


def _grey_palette(image) -> bool:
    palette = image.getpalette() or []
    rgb = np.array(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
    return bool(len(rgb)) and bool((rgb == rgb[:, :1]).all())


def decode(index: OwnIndex, size: int, channels: int, skip: bool,
           say: Callable[[str], None] = lambda line: None) -> Decoded:
    """Every image of the index as uint8 (C, size, size), cached by the index's fingerprint and these settings."""
    key = f"{index.fingerprint}-{size}-{channels}-{int(skip)}"
    path = cache_path("pixels", key)
    n = len(index.names)
    cached = load_npz(path, ("images", "kept", "skipped"),
                      lambda z: z["images"].shape[1:] == (channels, size, size) and len(z["kept"]) + len(z["skipped"]) == n
                      and len(z["images"]) == len(z["kept"]))
    if cached is not None:
        return Decoded(cached["images"], cached["kept"], cached["skipped"])
    from PIL import Image

    manifest_images = _manifest_images(index)
    images = np.empty((n, channels, size, size), dtype=np.uint8)
    ok = np.ones(n, dtype=bool)
    clock = _Clock(say, "decoding images", n)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for i in range(n):
            try:
                with _open(index, i, manifest_images) as image:
                    images[i] = to_array(image, size, channels)
            except Exception as exc:
                if not skip:
                    raise DataError(_bad(index, i, exc)) from None
                ok[i] = False
            clock.tick(i + 1)
    decoded = Decoded(images[ok], np.flatnonzero(ok), np.flatnonzero(~ok))
    atomic_savez(path, images=decoded.images, kept=decoded.kept, skipped=decoded.skipped)
    return decoded


def to_array(image, size: int, channels: int) -> np.ndarray:
    """One Pillow image as uint8 (channels, size, size): its first frame, converted and resized."""
    from PIL import Image

    image.seek(0)  # an animated GIF: its first frame
    image.load()  # a truncated file fails here
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16 / 32-bit grey: to 0..255
        values = np.asarray(image, dtype=np.float64)
        top = 255.0 if image.mode == "F" else 65535.0
        image = Image.fromarray(np.clip(np.rint(np.clip(values, 0, top) * (255.0 / top)), 0, 255).astype(np.uint8))
    target = "L" if channels == 1 else "RGB"
    if image.mode != target:
        image = image.convert("RGBA").convert(target) if image.mode == "P" else image.convert(target)
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


class _Clock:
    """A progress line at most every PROGRESS_EVERY_S seconds of a long pass."""

    def __init__(self, say, what: str, total: int):
        self.say, self.what, self.total = say, what, total
        self.start = self.last = time.monotonic()

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            try:
                self.say(f"{self.what}: {done:,} of {self.total:,} ({now - self.start:.0f} s)")
            except Exception:  # reporting only
                pass


__all__ = ["Probe", "Decoded", "probe", "decode", "to_array", "GREY_MODES"]
