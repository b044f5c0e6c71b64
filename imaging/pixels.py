"""Frames of a stored instance: as stored, decoded to native bytes, or rendered for a viewer.

Pure pydicom/numpy/Pillow over the instance's bytes. Compressed frames are decoded by
pydicom's plugins (Pillow, pylibjpeg and the RLE decoder), one frame at a time.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from .reading import UNCOMPRESSED

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


def frames_decoded(data: bytes, numbers: list[int]) -> list[bytes]:
    """The frames as native little-endian pixel bytes (application/octet-stream)."""
    dataset = _dataset(data)
    _check(numbers, frame_count(dataset))
    if str(dataset.file_meta.TransferSyntaxUID) in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):
        return frames_as_stored(data, numbers)
    arrays = [_decode(data, number - 1) for number in numbers]
    return [array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes() for array in arrays]


def _decode(data: bytes, index: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pixel_array(io.BytesIO(data), index=index)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError) as error:
        raise FrameError(f"The frame cannot be decoded ({type(error).__name__})") from None


def render(data: bytes, number: int, media_type: str, *, quality: int = 90) -> bytes:
    """One frame as an 8-bit PNG or JPEG: LUTs and windowing applied, MONOCHROME1 inverted."""
    dataset = _dataset(data)
    _check([number], frame_count(dataset))
    array = _decode(data, number - 1)
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        array = apply_color_lut(array, dataset)
    elif array.ndim == 2:
        array = apply_voi_lut(apply_modality_lut(array, dataset), dataset)
    image = Image.fromarray(_to_uint8(array, invert=photometric == "MONOCHROME1"))
    output = io.BytesIO()
    image.save(output, RENDERED_TYPES[media_type], **({"quality": quality} if media_type == "image/jpeg" else {}))
    return output.getvalue()


def _to_uint8(array: np.ndarray, *, invert: bool) -> np.ndarray:
    if array.dtype == np.uint8 and not invert:
        return array
    values = array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    if invert:
        scaled = 255.0 - scaled
    return scaled.round().astype(np.uint8)
