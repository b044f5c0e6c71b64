"""DICOM Part 10 headers read without pydicom: the fast path of ``imaging.reading``.

``header_read`` walks every element of a file once (the items of undefined-length sequences
and of encapsulated Pixel Data included) and notes where each top-level value lies; the
values the store needs are then decoded from those bytes (``Header.text``, ``.integer``,
``.json``). It reads only what devices commonly send (explicit or implicit VR little
endian, native or encapsulated Pixel Data, ASCII values) and is stricter than pydicom:
anything it does not fully understand (another encoding, a length that does not add up, a
VR it does not know, bytes left over, a value pydicom would convert in a way of its own)
gives None, and the caller reads the file, or decodes that value, with pydicom instead.
Where both read a file they give the same values: ``tests/imaging/test_header.py`` checks
this against pydicom on pydicom's whole test corpus and on damaged and unusual variants.
"""

from __future__ import annotations

import math
import re
import struct

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, tag_for_keyword

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
# Transfer syntaxes read here: implicit and explicit VR little endian, and the encapsulated
# ones (explicit VR little endian too). Deflate and big endian are left to pydicom.
NATIVE = {IMPLICIT_LITTLE, "1.2.840.10008.1.2.1"}
ENCAPSULATED = {
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
}
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())
_MAX_DEPTH = 16

_explicit = struct.Struct("<HH2sH").unpack_from
_implicit = struct.Struct("<HHL").unpack_from
_u32 = struct.Struct("<L").unpack_from

# Values decoded here: printable ASCII (the same in every character set pydicom knows, and
# no escape sequences), with or without backslashes (value delimiters).
_PLAIN = re.compile(rb"[\x20-\x7e]*")
_INTEGER = re.compile(r" *[+-]?[0-9]{1,12} *")
_DECIMAL = re.compile(r"[+-]?([0-9]{1,16}(\.[0-9]{0,16})?|\.[0-9]{1,16})([eE][+-]?[0-9]{1,3})?")
_STRING_VRS = {"AS", "CS", "DA", "DT", "TM", "UI"}  # pydicom: the whole value stripped, then split
_TEXT_VRS = {"LO", "SH", "UC"}  # pydicom: split, then each value stripped
_SINGLE_VRS = {"LT", "ST", "UT"}  # pydicom: never split
_BINARY = {"US": struct.Struct("<H"), "SS": struct.Struct("<h"), "UL": struct.Struct("<L"),
           "SL": struct.Struct("<l")}


class _Unusual(Exception):
    """Something this reader leaves to pydicom."""


class Header:
    """Where each top-level element of one file lies: ``elements[tag] = (VR, offset, length)``.

    The VR is the one written in the file (explicit VR) or pydicom's dictionary's
    (implicit VR; None for tags it does not know).
    """

    __slots__ = ("data", "elements", "fragments", "transfer_syntax")

    def __init__(self, data: bytes, transfer_syntax: str, elements: dict, fragments: int | None) -> None:
        self.data = data
        self.transfer_syntax = transfer_syntax
        self.elements = elements
        self.fragments = fragments  # encapsulated Pixel Data: its items, the offset table included

    def __contains__(self, tag: int) -> bool:
        return tag in self.elements

    def raw(self, tag: int) -> bytes | None:
        found = self.elements.get(tag)
        return None if found is None else self.data[found[1]:found[1] + found[2]]

    def length(self, tag: int) -> int | None:
        found = self.elements.get(tag)
        return None if found is None else found[2]

    def vr(self, tag: int) -> str | None:
        found = self.elements.get(tag)
        return None if found is None else found[0]

    def text(self, tag: int) -> str | None:
        """pydicom's ``str(value).strip()`` of a single string value ('' when absent); None: ask pydicom."""
        found = self.elements.get(tag)
        if found is None:
            return ""
        vr, start, length = found
        if vr not in _STRING_VRS and vr not in _TEXT_VRS and vr not in _SINGLE_VRS and vr != "PN":
            return None
        raw = self.data[start:start + length]
        if b"\\" in raw or (vr == "PN" and b"=" in raw) or not _plain(raw):
            return None
        return raw.decode("ascii").rstrip("\x00 ").strip()

    def integer(self, tag: int) -> int | None | bool:
        """An IS or US/SS/UL/SL value as pydicom reads it (None when absent); False: ask pydicom."""
        found = self.elements.get(tag)
        if found is None:
            return None
        vr, start, length = found
        if vr == "IS":
            raw = self.data[start:start + length]
            if not _plain(raw):
                return False
            text = raw.decode("ascii").rstrip(" \x00")
            if not text.strip():
                return None
            return int(text) if _INTEGER.fullmatch(text) else False
        unpack = _BINARY.get(vr)
        if unpack is None or length not in (0, unpack.size):
            return False
        return unpack.unpack_from(self.data, start)[0] if length else None

    def json(self, tags: tuple[str, ...]) -> dict | None:
        """These attributes as pydicom's ``to_json_dict`` writes them; None: ask pydicom."""
        out = {}
        for key in tags:
            number = _TAG_NUMBERS.get(key)
            if number is None:
                number = _TAG_NUMBERS[key] = int(key, 16)
            found = self.elements.get(number)
            if found is None:
                continue
            vr, start, length = found
            if length == 0:
                if vr not in _JSON_VRS:
                    return None
                out[key] = {"vr": vr}
                continue
            value = _json_value(vr, self.data[start:start + length])
            if value is None:
                return None
            out[key] = {"vr": vr, "Value": value} if value else {"vr": vr}
        return out


_JSON_VRS = _STRING_VRS | _TEXT_VRS | _SINGLE_VRS | {"PN", "IS", "DS"} | set(_BINARY)
_TAG_NUMBERS: dict[str, int] = {}  # "0020000D" -> 0x0020000D


def keyword_tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag


def _json_value(vr: str, raw: bytes) -> list | None:
    """The JSON "Value" of a non-empty value ([] when pydicom finds it empty); None: ask pydicom."""
    unpack = _BINARY.get(vr)
    if unpack is not None:
        if len(raw) % unpack.size:
            return None
        return [number for (number,) in unpack.iter_unpack(raw)]
    if not _plain(raw):
        return None
    text = raw.decode("ascii")
    if vr in _STRING_VRS:
        text = text.rstrip(" \x00")
        return [] if not text else text.split("\\")
    if vr in _TEXT_VRS:
        values = [part.rstrip("\x00 ") for part in text.split("\\")]
        return [] if values == [""] else values
    if vr in _SINGLE_VRS:
        text = text.rstrip("\x00 ")
        return [text] if text else []
    if vr == "PN":
        text = raw.rstrip(b"\x00 ").decode("ascii")
        if not text:
            return []
        names = text.split("\\")
        if any(not name or "=" in name for name in names):
            return None
        return [{"Alphabetic": name} for name in names]
    if vr == "IS":
        text = text.rstrip(" \x00")
        if not text:
            return []
        parts = text.split("\\")
        if not all(_INTEGER.fullmatch(part) for part in parts):
            return None
        return [int(part) for part in parts]
    if vr == "DS":
        text = text.strip().rstrip(" \x00")
        if not text:
            return []
        parts = text.split("\\")
        if not all(_DECIMAL.fullmatch(part) for part in parts):
            return None
        numbers = [float(part) for part in parts]
        return numbers if all(math.isfinite(number) for number in numbers) else None
    return None


def _plain(raw: bytes) -> bool:
    """Printable ASCII, but for the trailing NULs and spaces every string conversion drops."""
    return _PLAIN.fullmatch(raw.rstrip(b"\x00 ")) is not None


def _pydicom_defaults() -> bool:
    """The value conversions above are pydicom's with its default settings only."""
    settings = pydicom_config.settings
    return not (pydicom_config.use_DS_numpy or pydicom_config.use_IS_numpy or pydicom_config.use_DS_decimal
                or pydicom_config.datetime_conversion or pydicom_config.use_none_as_empty_text_VR_value
                or settings.reading_validation_mode == pydicom_config.RAISE)


def header_read(data: bytes) -> Header | None:
    """The elements of a Part 10 file (preamble included), or None to leave it to pydicom."""
    if len(data) < 144 or data[128:132] != b"DICM" or not _pydicom_defaults():
        return None
    try:
        meta_end, transfer_syntax = _meta(data)
        explicit = transfer_syntax != IMPLICIT_LITTLE
        if not explicit and len(data) >= meta_end + 6 and _looks_explicit(data[meta_end + 4:meta_end + 6]):
            return None  # pydicom would switch to explicit VR here
        elements: dict = {}
        fragments = _walk(data, meta_end, len(data), explicit, elements, 0, item=False)
    except (_Unusual, struct.error):
        return None
    return Header(data, transfer_syntax, elements, fragments if fragments >= 0 else None)


def _looks_explicit(vr: bytes) -> bool:
    return 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B


def _meta(data: bytes) -> tuple[int, str]:
    """The end of the file meta group (it must be exactly as long as it says) and its transfer syntax."""
    group, element, vr, length = _explicit(data, 132)
    if (group, element, vr, length) != (2, 0, b"UL", 4):
        raise _Unusual
    end = 144 + _u32(data, 140)[0]
    position, syntax = 144, None
    while position < end:
        group, element, vr, length = _explicit(data, position)
        if group != 2:
            raise _Unusual
        if vr in _LONG_VRS:
            length = _u32(data, position + 8)[0]
            position += 12
        elif vr in _SHORT_VRS:
            position += 8
        else:
            raise _Unusual
        if element == 0x0010:
            syntax = data[position:position + length].decode("latin-1").rstrip(" \x00")
        position += length
    if position != end or len(data) < end + 8 or data[end:end + 2] == b"\x02\x00":
        raise _Unusual
    if syntax not in NATIVE and syntax not in ENCAPSULATED:
        raise _Unusual
    return end, syntax


def _walk(data: bytes, position: int, end: int, explicit: bool, top: dict | None, depth: int, *,
          item: bool) -> int:
    """Walk a data set's elements up to ``end`` (an undefined-length item: up to its delimiter).

    Returns the number of Pixel Data items at the top level (-1 when native or absent), the
    position after the item delimiter inside an undefined-length item, else ``end``.
    """
    if depth > _MAX_DEPTH:
        raise _Unusual
    fragments = -1
    while position < end:
        if position + 8 > end:
            raise _Unusual
        if explicit:
            group, element, raw_vr, length = _explicit(data, position)
        else:
            group, element, length = _implicit(data, position)
        tag = group << 16 | element
        if group == 0xFFFE:
            if item and tag == ITEM_END and _u32(data, position + 4)[0] == 0:
                return position + 8
            raise _Unusual
        if explicit:
            if raw_vr in _LONG_VRS:
                if position + 12 > end or length != 0:
                    raise _Unusual
                length = _u32(data, position + 8)[0]
                start = position + 12
            elif raw_vr in _SHORT_VRS:
                start = position + 8
            else:
                raise _Unusual
            vr = raw_vr.decode("ascii")
        else:
            start = position + 8
            vr = _implicit_vr(tag)
        if length == UNDEFINED:
            if vr == "SQ":
                position = _sequence(data, start, end, explicit, depth)
            elif top is not None and explicit and tag == PIXEL_DATA and vr in ("OB", "OW"):
                position, fragments = _fragments(data, start, end)
            else:
                raise _Unusual
        else:
            position = start + length
            if position > end:
                raise _Unusual
        if top is not None:
            top[tag] = (vr, start, length)
    if item:
        raise _Unusual  # no item delimiter
    return fragments


def _implicit_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _sequence(data: bytes, position: int, end: int, explicit: bool, depth: int) -> int:
    """The items of an undefined-length sequence; the position after its delimiter."""
    while True:
        length, position = _item_header(data, position, end)
        if length is None:
            return position
        if explicit and position + 6 <= end and not _looks_explicit(data[position + 4:position + 6]):
            if not (length == UNDEFINED and data[position:position + 4] == b"\xfe\xff\x0d\xe0") and length:
                raise _Unusual  # an implicit VR item inside explicit VR: pydicom's own rules
        if length == UNDEFINED:
            position = _walk(data, position, end, explicit, None, depth + 1, item=True)
        else:
            item_end = position + length
            if item_end > end:
                raise _Unusual
            _walk(data, position, item_end, explicit, None, depth + 1, item=False)
            position = item_end


def _fragments(data: bytes, position: int, end: int) -> tuple[int, int]:
    """The items of encapsulated Pixel Data: the position after its delimiter, and their number."""
    items = 0
    while True:
        length, position = _item_header(data, position, end)
        if length is None:
            return position, items
        if length == UNDEFINED or position + length > end:
            raise _Unusual
        position += length
        items += 1


def _item_header(data: bytes, position: int, end: int) -> tuple[int | None, int]:
    """The next item's length and the position after its header; None at the sequence delimiter."""
    if position + 8 > end:
        raise _Unusual
    group, element, length = _implicit(data, position)
    tag = group << 16 | element
    if tag == SEQUENCE_END:
        if length:
            raise _Unusual
        return None, position + 8
    if tag != ITEM:
        raise _Unusual
    return length, position + 8
