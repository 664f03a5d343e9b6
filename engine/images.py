"""Images in: a folder of PNG/JPEG files, a glob of them, or a ``.npy`` array, as a generator's targets.

``open_images(IMAGES)`` checks every input before anything is written (each file opens as an image, the
array has an image shape and range) and returns an ``ImageSource``: the rows' names and a reader that gives
any slice of rows as (b, C, H, W) float32 in the generator's range [-1, 1], at its channels and resolution.
It holds paths, not pixels, so a chunked job can be pickled to a Dask worker and read only its own rows.

Conversions, the same for files and arrays:

* values: 8-bit files and uint8 arrays map 0..255 to [-1, 1], and so do arrays of any other integer type whose
  values all lie in 0..255; 16-bit grey PNGs (PIL modes ``I;16*``, or ``I`` from a PNG, which PNG only makes of
  16-bit grey) and uint16 arrays with values above 255 map 0..65535 to [-1, 1] (16-bit colour PNGs PIL already
  reads as 8-bit); other integer ranges are refused; float arrays must already lie in [-1, 1]. Files PIL reads as 32-bit integers from another
  format (``I``) or as floats (``F``) have no declared range: they are refused, in one line naming the mode
  (save them as 8- or 16-bit PNG, or as a .npy array);
* channels: grey to colour repeats the channel; colour to grey takes ITU-R 601 luma (PIL's ``L``); an alpha
  channel is dropped;
* size: a non-square image is centre-cropped to a square, then resized to the generator's resolution with
  bilinear interpolation (antialiased when shrinking).

Names: a file's path as given (folder + name), or ``ARRAY.npy[i]`` for row i of an array. The files (and the
array) are read from absolute paths, so a worker in another folder reads the same files.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Bytes of a ``.npy`` array read at a time when its range is validated (at least one row).
CHECK_BYTES = 64 << 20
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
#: PIL modes of 16-bit grey files, read as 0..65535.
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class ImageSource:
    """Validated images: ``names`` (one per row) and where to read them (``files``, or one ``array`` path).

    ``layout`` of an array: 'nchw', 'nhwc' or 'nhw'; ``scale`` 'uint8' (0..255), 'uint16' (0..65535) or 'unit'
    ([-1, 1]).
    """

    names: tuple[str, ...]
    files: tuple[str, ...] = ()
    array: str | None = None
    layout: str = "nchw"
    scale: str = "uint8"

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def description(self) -> dict[str, object]:
        """What a store records of where its targets came from."""
        if self.array is not None:
            return {"kind": "array", "path": self.array, "layout": self.layout, "values": self.scale,
                    "count": self.n}
        return {"kind": "files", "count": self.n, "first": self.names[0], "last": self.names[-1]}

    def read(self, rows: slice, resolution: int, channels: int) -> np.ndarray:
        """Rows ``rows`` as (b, channels, resolution, resolution) float32 in [-1, 1]."""
        if self.array is not None:
            block = np.load(self.array, mmap_mode="r")[rows]
            images = [_from_array(np.asarray(image), self.layout, self.scale) for image in block]
        else:
            images = [_read_file(path) for path in self.files[rows]]
        return np.stack([conform(image, resolution, channels) for image in images]) if images else \
            np.empty((0, channels, resolution, resolution), np.float32)


def open_images(spec: str | os.PathLike) -> ImageSource:
    """Check ``spec`` (a folder, a glob, an image file or a ``.npy`` array) and return its ``ImageSource``.

    A ValueError names the problem: nothing matched, a folder without images, a file that is not a readable
    image, a file that is not a .npy array, an array with no images or not (n, C, H, W), (n, H, W) or
    (n, H, W, C) of 1, 3 or 4 channels, integer values outside 0..255 (0..65535 for uint16), or float values
    outside [-1, 1].
    """
    text = str(spec)
    if text.lower().endswith(".npy"):
        return _open_array(text)
    if any(ch in text for ch in "*?["):
        files = sorted(p for p in glob.glob(text) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"images: no PNG or JPEG file matches {text!r}")
    elif Path(text).is_dir():
        files = sorted(str(p) for p in Path(text).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"images: the folder {text} holds no PNG or JPEG files")
    elif Path(text).is_file():
        files = [text]
    else:
        raise ValueError(f"images: {text} does not exist (give a folder, a glob, an image file or a .npy array)")
    for path in files:
        _check_file(path)
    return ImageSource(names=tuple(files), files=tuple(os.path.abspath(path) for path in files))


def _check_file(path: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
            refusal = _refused_mode(image)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"images: cannot read {path} as an image ({reason})") from None
    if refusal:
        raise ValueError(f"images: {path} {refusal}")


def _refused_mode(image: Any) -> str | None:
    """Why an opened image's values have no known range (32-bit integers outside PNG, floats), else None."""
    if image.mode == "F" or (image.mode == "I" and image.format != "PNG"):
        kind = "floats" if image.mode == "F" else "32-bit integers"
        return (f"holds {kind} (PIL mode {image.mode}) with no declared range; save it as an 8- or 16-bit PNG "
                "or give a .npy array")
    return None


def _sixteen_bit(image: Any) -> bool:
    """Whether PIL reads the file as 16-bit grey: ``I;16*``, or ``I`` from a PNG (PNG's 16-bit grey)."""
    return image.mode in SIXTEEN_BIT or (image.mode == "I" and image.format == "PNG")


def _read_file(path: str) -> np.ndarray:
    """A file as (C, H, W) float32 in [-1, 1], C in (1, 3)."""
    from PIL import Image

    with Image.open(path) as image:
        refusal = _refused_mode(image)
        if refusal:
            raise ValueError(f"images: {path} {refusal}")
        if _sixteen_bit(image):
            return np.asarray(image, np.float32)[None] / 32767.5 - 1.0
        image = image.convert("L" if image.mode in ("1", "L", "LA") else "RGB")
        values = np.asarray(image, np.float32)
    values = values[None] if values.ndim == 2 else values.transpose(2, 0, 1)
    return values / 127.5 - 1.0


def _open_array(path: str) -> ImageSource:
    array = _load_array(path)
    shape = array.shape
    layout = _layout(shape)
    if layout is None or array.dtype.kind not in "uif":
        raise ValueError(f"images: {path} must hold n images as (n, C, H, W), (n, H, W) or (n, H, W, C) with C "
                         f"of 1, 3 or 4, in integers 0..255 or floats in [-1, 1]; got shape {shape}, "
                         f"dtype {array.dtype}")
    if shape[0] == 0:
        raise ValueError(f"images: {path} holds no images (shape {shape})")
    scale = _scale(path, array)
    names = tuple(f"{Path(path).name}[{i}]" for i in range(shape[0]))
    return ImageSource(names=names, array=os.path.abspath(path), layout=layout, scale=scale)


def _load_array(path: str) -> np.ndarray:
    """The array of a ``.npy`` file, memory-mapped; a file that is not one is refused by name."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(NPY_MAGIC))
    except OSError as exc:
        raise ValueError(f"images: cannot read {path} ({exc.strerror or exc})") from None
    if head != NPY_MAGIC:
        what = "an empty file" if not head else "a .npz archive" if head.startswith(b"PK") else "no NumPy header"
        raise ValueError(f"images: {path} is not a .npy array ({what}; save images with numpy.save)")
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise ValueError(f"images: cannot read {path} as a .npy array ({exc})") from None


def _scale(path: str, array: np.ndarray) -> str:
    """How an array's values map to [-1, 1]: 'uint8' (0..255), 'uint16' (0..65535) or 'unit' (as they are).

    uint8 is 0..255 and uint16 (either byte order) 0..65535 by their types, as 8- and 16-bit PNGs are, whatever
    values they hold. Other integers are 0..255 when every value lies there; any other integer range is refused.
    Floats must lie in [-1, 1]. The whole array is checked.
    """
    if array.dtype == np.uint8:
        return "uint8"
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        return "uint16"
    low, high = _range(array)
    if array.dtype.kind == "f":
        if not (low >= -1.0 and high <= 1.0):
            found = "NaN or infinite values" if not np.isfinite([low, high]).all() else f"values {low:g}..{high:g}"
            raise ValueError(f"images: {path} holds {array.dtype} {found}, outside [-1, 1]; give integers 0..255 "
                             "or floats in the generator's range [-1, 1]")
        return "unit"
    if low >= 0 and high <= 255:
        return "uint8"
    raise ValueError(f"images: {path} holds {array.dtype} values {low}..{high}; integer images must lie in 0..255 "
                     "(or be uint16, 0..65535)")


def _range(array: np.ndarray) -> tuple[Any, Any]:
    """(min, max) of a non-empty array (NaN if it holds any), read CHECK_BYTES at a time."""
    row_bytes = max(1, array[0].nbytes)
    rows = max(1, CHECK_BYTES // row_bytes)
    lows, highs = [], []
    for start in range(0, array.shape[0], rows):
        block = np.asarray(array[start:start + rows])
        lows.append(block.min())
        highs.append(block.max())
    return np.min(lows), np.max(highs)


def _layout(shape: tuple[int, ...]) -> str | None:
    if 0 in shape[1:]:
        return None
    if len(shape) == 3:
        return "nhw"
    if len(shape) == 4 and shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
        return "nchw"
    if len(shape) == 4 and shape[3] in (1, 3, 4):
        return "nhwc"
    return None


def _from_array(image: np.ndarray, layout: str, scale: str) -> np.ndarray:
    """One array row as (C, H, W) float32 in [-1, 1]."""
    values = image.astype(np.float32)
    if layout == "nhw":
        values = values[None]
    elif layout == "nhwc":
        values = values.transpose(2, 0, 1)
    if values.shape[0] == 4:
        values = values[:3]
    if scale == "uint8":
        return values / 127.5 - 1.0
    return values / 32767.5 - 1.0 if scale == "uint16" else values


def conform(image: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    """(C, H, W) float32 in [-1, 1] -> (channels, resolution, resolution): centre crop, resize, channels."""
    import torch
    from torch.nn import functional as F

    if image.shape[0] != channels:
        if channels == 1:
            image = np.tensordot(_LUMA, image[:3], axes=1)[None] if image.shape[0] >= 3 else image[:1]
        elif image.shape[0] == 1:
            image = np.repeat(image, channels, axis=0)
        else:
            raise ValueError(f"images have {image.shape[0]} channels; the generator takes {channels}")
    height, width = image.shape[1:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = image[:, top:top + side, left:left + side]
    if side != resolution:
        tensor = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None]
        tensor = F.interpolate(tensor, size=(resolution, resolution), mode="bilinear", align_corners=False,
                               antialias=side > resolution)
        image = tensor[0].clamp(-1.0, 1.0).numpy()
    return np.ascontiguousarray(image, np.float32)


__all__ = ["IMAGE_SUFFIXES", "ImageSource", "conform", "open_images"]
