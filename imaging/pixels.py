"""Frames of a stored instance: as stored, decoded to native bytes, or rendered for a viewer.

Pure pydicom/numpy/Pillow over the instance's bytes. Compressed frames are decoded by
pydicom's plugins (Pillow, pylibjpeg and the RLE decoder), one frame at a time.

Decompression bombs: nothing is decoded for an instance that declares more pixel bytes than
the caller's limit, nor a compressed frame whose own codestream declares more pixels than
Rows × Columns (``codestream_check``), and rendering converts a frame in strips of rows, so
its memory stays about the decoded frame's size.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, get_frame
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.pixels.utils import _get_jpg_parameters

from .reading import UNCOMPRESSED, pixel_bytes

# Media types of frames kept compressed, by transfer syntax (PS3.18 Table 8.7.3-2).
COMPRESSED_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
RENDERED_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}


class FrameError(ValueError):
    """A frame number outside the instance, or pixels that cannot be decoded."""


class FrameTooLarge(FrameError):
    """Decoding would take more memory than allowed (a decompression bomb, or too many frames)."""


_J2K_SIZ = b"\xff\x4f\xff\x51"  # SOC then SIZ: the start of every JPEG 2000 codestream
_STRIP_PIXELS = 1 << 18  # pixels converted at a time when rendering (2 MB per float64 step)
# The defaults of DICOM_MAX_PIXEL_BYTES_PER_INSTANCE and _PER_REQUEST (the views pass the settings).
INSTANCE_LIMIT, REQUEST_LIMIT = 1 << 30, 2 << 30


def declared_bytes(dataset: Dataset, frames: int | None = None) -> int:
    """Decoded bytes of ``frames`` frames (all by default), as the Image Pixel module declares."""
    def number(keyword: str):
        try:
            return int(dataset.get(keyword) or 0)
        except (TypeError, ValueError):
            return 0

    return pixel_bytes(number("Rows"), number("Columns"), frames or frame_count(dataset),
                       number("BitsAllocated"), number("SamplesPerPixel"))


def size_check(dataset: Dataset, limit: int, frames: int | None = None) -> None:
    """Refuse to decode more than ``limit`` bytes (the whole instance unless ``frames``)."""
    if declared_bytes(dataset, frames) > limit:
        raise FrameTooLarge("The decoded pixel data would exceed this node's limit")


def codestream_check(frame: bytes, rows: int, columns: int) -> None:
    """Refuse a compressed frame whose own header declares more pixels than Rows × Columns.

    Decoders allocate what the codestream declares, not what the data set does. JPEG and
    JPEG-LS carry it in their SOF segment, JPEG 2000 in SIZ; RLE decodes into Rows × Columns.
    """
    start = frame.find(_J2K_SIZ, 0, 4096)
    if start >= 0:
        siz = frame[start + 8:start + 24]
        width = int.from_bytes(siz[0:4], "big") - int.from_bytes(siz[8:12], "big")
        height = int.from_bytes(siz[4:8], "big") - int.from_bytes(siz[12:16], "big")
    elif frame[:2] == b"\xff\xd8":
        info = _get_jpg_parameters(frame)
        height, width = info.get("height", -1), info.get("width", -1)
    else:
        return  # RLE, or not a codestream the decoders would size on their own
    if not (0 <= height <= rows and 0 <= width <= columns) or height * width == 0:
        raise FrameTooLarge("A compressed frame declares another size than the image")


def _dataset(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data))


def frame_count(dataset: Dataset) -> int:
    try:
        return max(1, int(dataset.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _check(numbers: list[int], count: int) -> None:
    bad = [number for number in numbers if not 1 <= number <= count]
    if bad:
        raise FrameError(f"Frame {bad[0]} is outside 1..{count}")


def frames_as_stored(data: bytes, numbers: list[int]) -> list[bytes]:
    """The frames' bytes as stored: native slices, or each compressed frame's codestream."""
    dataset = _dataset(data)
    count = frame_count(dataset)
    _check(numbers, count)
    pixels = dataset.PixelData
    syntax = str(dataset.file_meta.TransferSyntaxUID)
    if syntax in UNCOMPRESSED:
        size = _frame_size(dataset)
        return [bytes(pixels[(n - 1) * size:n * size]) for n in numbers]
    frames = list(generate_frames(pixels, number_of_frames=count))
    return [frames[n - 1] for n in numbers]


def _frame_size(dataset: Dataset) -> int:
    samples = int(dataset.get("SamplesPerPixel") or 1)
    return int(dataset.Rows) * int(dataset.Columns) * samples * int(dataset.BitsAllocated) // 8


def frames_decoded(data: bytes, numbers: list[int], *, max_instance_bytes: int = INSTANCE_LIMIT,
                   max_bytes: int = REQUEST_LIMIT) -> list[bytes]:
    """The frames as native little-endian pixel bytes (application/octet-stream).

    Refused (``FrameTooLarge``) when the instance declares more than ``max_instance_bytes`` or
    the frames asked for (repeats included) more than ``max_bytes``.
    """
    dataset = _dataset(data)
    _check(numbers, frame_count(dataset))
    size_check(dataset, max_instance_bytes)
    size_check(dataset, max_bytes, frames=len(numbers))
    if str(dataset.file_meta.TransferSyntaxUID) in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):
        return frames_as_stored(data, numbers)
    arrays = (_decode(data, number - 1, dataset) for number in numbers)
    return [array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes() for array in arrays]


def _decode(data: bytes, index: int, dataset: Dataset) -> np.ndarray:
    """One frame; a compressed one only once its codestream is known to fit Rows × Columns."""
    if str(dataset.file_meta.TransferSyntaxUID) not in UNCOMPRESSED:
        try:
            frame = get_frame(dataset.PixelData, index, number_of_frames=frame_count(dataset))
        except (ValueError, IndexError, TypeError) as error:
            raise FrameError(f"The frame cannot be decoded ({type(error).__name__})") from None
        codestream_check(frame, int(dataset.Rows), int(dataset.Columns))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pixel_array(io.BytesIO(data), index=index)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError) as error:
        raise FrameError(f"The frame cannot be decoded ({type(error).__name__})") from None


def render(data: bytes, number: int, media_type: str, *, max_instance_bytes: int = INSTANCE_LIMIT,
           quality: int = 90) -> bytes:
    """One frame as an 8-bit PNG or JPEG: LUTs and windowing applied, MONOCHROME1 inverted.

    Refused (``FrameTooLarge``) when the instance declares more than ``max_instance_bytes``.
    """
    dataset = _dataset(data)
    _check([number], frame_count(dataset))
    size_check(dataset, max_instance_bytes)
    array = _decode(data, number - 1, dataset)
    photometric = str(dataset.get("PhotometricInterpretation", ""))

    def lookup(strip: np.ndarray) -> np.ndarray:
        if photometric == "PALETTE COLOR":
            return apply_color_lut(strip, dataset)
        return apply_voi_lut(apply_modality_lut(strip, dataset), dataset) if strip.ndim == 2 else strip

    image = Image.fromarray(_to_uint8(array, lookup, invert=photometric == "MONOCHROME1"))
    output = io.BytesIO()
    image.save(output, RENDERED_TYPES[media_type], **({"quality": quality} if media_type == "image/jpeg" else {}))
    return output.getvalue()


def _to_uint8(array: np.ndarray, lookup, *, invert: bool) -> np.ndarray:
    """``lookup`` (pointwise LUTs) of ``array`` scaled to 0..255, a strip of rows at a time.

    The LUTs compute in float64: on a whole 8000 × 8000 frame that is half a gigabyte per
    step. Strips of ``_STRIP_PIXELS`` keep each step to a few megabytes (at two passes' cost).
    """
    step = max(1, _STRIP_PIXELS // max(1, array.shape[1]))
    strips = [slice(start, start + step) for start in range(0, array.shape[0], step)]
    first = lookup(array[strips[0]])
    if first.dtype == np.uint8 and not invert:
        return np.concatenate([first, *(lookup(array[rows]) for rows in strips[1:])])
    low, high = np.inf, -np.inf
    for rows in strips:
        values = lookup(array[rows])
        low, high = min(low, float(values.min())), max(high, float(values.max()))
    out = np.empty((array.shape[0], *first.shape[1:]), dtype=np.uint8)
    for rows in strips:
        values = lookup(array[rows]).astype(np.float64)
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
        out[rows] = (255.0 - scaled if invert else scaled).round()
    return out
