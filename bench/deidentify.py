"""De-identification: the tag profile and ultrasound pixel cleaning, Carrack against other tools.

No servers and no database: pure file work in one process. Needs the ``bench`` extra (dicognito,
deid, pydicom-data):

    .venv/bin/pip install -c constraints.txt -e '.[bench]'
    .venv/bin/python bench/deidentify.py [--files 240] [--pixel-repeat 10]

Two parts, each printing a Markdown table (pasted into docs/benchmarks.md):

1. Tag profile on ``--files`` Part-10 files: pydicom's six real test files (US cine JPEG, US
   JPEG 2000, US RGB, US palette, CT, MR) replicated with new UIDs (four instances per study)
   and every Table E.1-1 attribute of a string VR filled with a synthetic identifying value,
   one item with names, IDs and UIDs in every Table E.1-1 sequence, and private attributes at
   the top level and nested, and two sequences the table does not list (Referenced Series,
   Procedure Code) holding items with names, IDs and UIDs. Each tool reads the file, de-identifies, writes Part-10 bytes.
   Files/s (best of two passes) and peak traced memory (tracemalloc, separate pass, outputs
   dropped) on the real files with new UIDs only and on the same with synthetic PHI; what was
   left behind: attributes of Table E.1-1 (and private ones) whose non-empty value is still at
   the same place in the output, and distinct identifying strings found anywhere in the output
   bytes. Times of day (TM) are not counted: Retain Longitudinal Modified Dates keeps them.
2. Pixel cleaning of multi-frame ultrasound: Carrack (default options) against deid's
   ``DicomCleaner`` with its ultrasound recipe (keep the Sequence of Ultrasound Regions), on the
   real multi-frame US files at hand; files/s, output size / input size, and whether anything
   outside the regions is left (frame 0, more than 16 px from the region edges).
"""

from __future__ import annotations

import functools
import io
import os
import platform
import re
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

BASE_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BASE_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import table  # noqa: E402

from imaging import deid_tables  # noqa: E402
from imaging.dicom import DeidOptions, deidentify_bytes  # noqa: E402

KEY = b"bench-deidentify-key-0123456789ab"
BASE_FILES = ("examples_ybr_color.dcm", "examples_jpeg2k.dcm", "examples_rgb_color.dcm",
              "examples_palette.dcm", "CT_small.dcm", "MR_small.dcm")
ROOT = "1.2.826.0.1.3680043.8.498.77."
BULK = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "SQ"})
_NUMBER = re.compile(r"[-+]?[0-9]*\.?[0-9]+")
PIXEL_FILES = ("examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm", "OBXXXX1A_rle_2frame.dcm")


# --- corpus ----------------------------------------------------------------------------------------

def _value(vr: str, i: int, tag: int):
    low = tag & 0xFFFF
    return {
        "PN": f"Doe{i}^Jane{low:04X}", "LO": f"PHI {i} {tag:08X} Zyxwa", "SH": f"P{i}X{low:04X}",
        "CS": f"PHI{i}", "AE": f"AE{i}X{low:04X}", "ST": f"Patient Doe{i} seen at Zyxwa {tag:08X}",
        "LT": f"Patient Doe{i} seen at Zyxwa {tag:08X}", "UT": f"Doe{i} Zyxwa {tag:08X}",
        "UC": f"Doe{i} Zyxwa {tag:08X}", "DA": f"2015{i % 12 + 1:02d}{low % 28 + 1:02d}",
        "TM": "101530", "DT": f"2015{i % 12 + 1:02d}{low % 28 + 1:02d}101530",
        "UI": f"{ROOT}9.{i}.{tag}", "AS": "045Y", "DS": "12.5", "IS": "7",
        "UR": f"http://phi.example/{i}",
    }.get(vr)


def _item(i: int) -> Dataset:
    item = Dataset()
    item.PersonName = f"Nested{i}^Person"
    item.PatientID = f"NESTED{i:05d}"
    item.InstitutionName = f"Zyxwa Hospital {i}"
    item.ReferencedSOPInstanceUID = f"{ROOT}8.{i}"
    item.add_new(0x00430010, "LO", "BENCH NESTED")
    item.add_new(0x00431001, "LO", f"nested private {i}")
    return item


def enrich(ds: Dataset, i: int) -> None:
    """Every Table E.1-1 attribute of a string VR (and one item per sequence) not yet there."""
    for tag in deid_tables.BASIC_ACTIONS:
        if tag in ds or tag >> 16 in (0x0000, 0x0002, 0xFFFA, 0xFFFC) or not dictionary_has_tag(tag):
            continue
        vr = dictionary_VR(tag)
        if vr == "SQ":
            ds.add_new(tag, "SQ", Sequence([_item(i)]))
        elif (value := _value(vr, i, tag)) is not None:
            ds.add_new(tag, vr, value)
    series = Dataset()  # sequences Table E.1-1 does not list, holding attributes it does
    series.SeriesInstanceUID = f"{ROOT}2.{i}.0"
    series.ReferencedInstanceSequence = Sequence([_item(i)])
    ds.ReferencedSeriesSequence = Sequence([series])
    ds.ProcedureCodeSequence = Sequence([_item(i)])
    ds.add_new(0x00090010, "LO", "BENCH PRIVATE")
    ds.add_new(0x00091001, "LO", f"private Doe{i}")
    ds.add_new(0x00091002, "UI", f"{ROOT}7.{i}")


def corpus(count: int, folder: Path, *, synthetic: bool = True) -> list[Path]:
    """Copies of the real files with new UIDs (four instances per study); ``synthetic`` adds
    the identifying attributes of ``enrich``."""
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        ds = pydicom.dcmread(get_testdata_file(BASE_FILES[i % len(BASE_FILES)]))
        study = i // 4
        ds.StudyInstanceUID, ds.FrameOfReferenceUID = f"{ROOT}1.{study}", f"{ROOT}4.{study}"
        ds.SeriesInstanceUID, ds.SOPInstanceUID = f"{ROOT}2.{study}", f"{ROOT}3.{i}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName = f"PID{study:05d}", f"Doe{study}^John"
        if synthetic:
            enrich(ds, i)
        paths.append(folder / f"{i:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


# --- the tools ----------------------------------------------------------------------------------------

def _write(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def carrack(options: DeidOptions) -> Callable[[Path], bytes]:
    return lambda path: deidentify_bytes(path.read_bytes(), key=KEY, options=options)


def dicognito_tool() -> Callable[[Path], bytes]:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="bench")

    def run(path: Path) -> bytes:
        ds = pydicom.dcmread(path)
        anonymizer.anonymize(ds)
        return _write(ds)
    return run


def deid_tool() -> Callable[[Path], bytes]:
    from deid.dicom import replace_identifiers

    def run(path: Path) -> bytes:
        ds = replace_identifiers(dicom_files=[str(path)], save=False, remove_private=True)[0]
        # The default recipe removes every attribute whose name contains "UID", the file meta's
        # too; refill those two from the source, only so that pydicom can write a Part-10 file.
        source = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        ds.file_meta.MediaStorageSOPClassUID = source.MediaStorageSOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}6.{path.stem}"
        return _write(ds)
    return run


def dicom_anonymizer_tool() -> Callable[[Path], bytes]:
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset, initialize_actions

    rules = functools.partial(initialize_actions, "dicomfields_2026c")

    def run(path: Path) -> bytes:
        ds = pydicom.dcmread(path)
        anonymize_dataset(ds, delete_private_tags=True, base_rules_gen=rules)
        return _write(ds)
    return run


TOOLS = {
    "Carrack, basic profile (options off)": lambda: carrack(DeidOptions(
        retain_longitudinal_modified_dates=False, clean_descriptors=False,
        clean_pixel_data=False)),
    "Carrack, + modified dates + clean descriptors": lambda: carrack(
        DeidOptions(clean_pixel_data=False)),
    "dicognito 0.19.0 (defaults)": dicognito_tool,
    "deid 0.4.13 (default recipe, remove_private)": deid_tool,
    "dicom-anonymizer 2.1.0 (2026c table)": dicom_anonymizer_tool,
}


# --- what is left behind ------------------------------------------------------------------------------

def _flat(ds: Dataset, prefix: tuple = ()) -> dict[tuple, tuple[str, str]]:
    """path -> (VR, value) of every non-bulk element, nested paths through item indexes."""
    flat: dict[tuple, tuple[str, str]] = {}
    for elem in ds:
        path = prefix + (int(elem.tag),)
        if elem.VR == "SQ":
            for k, item in enumerate(elem.value or []):
                flat.update(_flat(item, path + (k,)))
        elif elem.VR not in BULK and elem.value not in (None, ""):
            flat[path] = (elem.VR, str(elem.value))
    return flat


def _must_change(path: tuple) -> bool:
    tags = path[::2]
    if any((t >> 16) % 2 for t in tags):
        return True
    tag = path[-1]
    return tag in deid_tables.BASIC_ACTIONS or any(
        (tag >> 16) & gm == g & gm and tag & 0xFFFF & em == e & em
        for g, e, gm, em, _a in deid_tables.MASKED_ACTIONS)


def left_behind(source: bytes, output: bytes) -> tuple[int, int]:
    """(table or private attributes unchanged in place, identifying strings found anywhere)."""
    before = _flat(pydicom.dcmread(io.BytesIO(source)))
    after = _flat(pydicom.dcmread(io.BytesIO(output)))
    secret = {p: (vr, v) for p, (vr, v) in before.items() if _must_change(p) and vr != "TM"}
    benign = [v for p, (vr, v) in before.items() if not _must_change(p)]
    in_place = sum(1 for p, (_vr, v) in secret.items() if after.get(p, (None, None))[1] == v)
    # Anywhere: names, IDs, texts, UIDs (not dates: a shifted date may equal another original,
    # nor numbers), and only strings that no kept attribute of the input also holds.
    strings = {v for vr, v in secret.values() if len(v) >= 6 and vr not in ("DA", "DT")
               and not _NUMBER.fullmatch(v) and not any(v in b for b in benign)}
    return in_place, sum(1 for v in strings if v.encode() in output)


# --- part 1 -------------------------------------------------------------------------------------------

def run_tool(tool: Callable[[Path], bytes], paths: list[Path],
             keep: bool = True) -> tuple[list[bytes | None], int]:
    outputs: list[bytes | None] = []
    errors = 0
    for path in paths:
        try:
            output = tool(path)
        except Exception:  # noqa: BLE001 - a tool failing on a file is counted, not fatal
            output, errors = None, errors + 1
        if keep:
            outputs.append(output)
    return outputs, errors


def measure(tool: Callable[[Path], bytes], paths: list[Path]) -> tuple[float, float, list, int]:
    """Best files/s of two passes, peak traced MiB of a third (outputs dropped), the outputs."""
    run_tool(tool, paths[:6], keep=False)  # warm-up: imports, tables
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        outputs, errors = run_tool(tool, paths)
        rates.append(len(paths) / (time.perf_counter() - start))
    tracemalloc.start()
    run_tool(tool, paths, keep=False)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return max(rates), peak, outputs, errors


def tag_profile(paths: list[Path], plain: list[Path]) -> str:
    sources = [p.read_bytes() for p in paths]
    rows = []
    for name, make in TOOLS.items():
        tool = make()
        plain_rate, plain_peak, _outputs, _errors = measure(tool, plain)
        rate, peak, outputs, errors = measure(tool, paths)
        left = [left_behind(s, o) for s, o in zip(sources, outputs, strict=True) if o]
        in_place, anywhere = sum(a for a, _ in left), sum(b for _, b in left)
        rows.append([name, plain_rate, plain_peak, rate, peak, errors, in_place, anywhere,
                     f"{in_place / max(len(left), 1):.1f}"])
        print(f"  {name}: {plain_rate:.1f} / {rate:.1f} files/s", file=sys.stderr)
    return table(["tool", "files/s, real files", "peak MiB, real", "files/s, + synthetic PHI",
                  "peak MiB, + PHI", "files failed", "attributes left in place",
                  "identifying strings in output", "left per file"], rows)


# --- part 2 -------------------------------------------------------------------------------------------

def pixel_files() -> list[Path]:
    found = [Path(get_testdata_file(PIXEL_FILES[0]))]
    try:
        import data_store  # pydicom-data: more real ultrasound

        folder = Path(data_store.__file__).parent / "data"
        found += [folder / name for name in PIXEL_FILES[1:] if (folder / name).exists()]
    except ImportError:
        pass
    return found


def _outside_left(output: bytes) -> int:
    """Non-black pixels of frame 0 outside the regions, more than 16 px from their edges."""
    ds = pydicom.dcmread(io.BytesIO(output))
    frame = ds.pixel_array[0] if int(ds.get("NumberOfFrames") or 1) > 1 else ds.pixel_array
    inside = np.zeros(frame.shape[:2], bool)
    for r in ds.SequenceOfUltrasoundRegions:
        inside[max(r.RegionLocationMinY0 - 16, 0): r.RegionLocationMaxY1 + 17,
               max(r.RegionLocationMinX0 - 16, 0): r.RegionLocationMaxX1 + 17] = True
    outside = frame[~inside]
    return int(np.count_nonzero(outside.reshape(len(outside), -1).max(axis=1) > 16))


def deid_cleaner(folder: Path) -> Callable[[Path], bytes]:
    import deid
    from deid.dicom import DicomCleaner
    from deid.logger import bot

    bot.level = 0  # deid's pixel module sets its logger to print a line per file

    recipe = str(Path(deid.__file__).parent / "data" / "deid.dicom.ultrasound")

    def run(path: Path) -> bytes:
        cleaner = DicomCleaner(output_folder=str(folder), deid=recipe)
        cleaner.detect(str(path))
        cleaner.clean()
        return Path(cleaner.save_dicom(output_folder=str(folder))).read_bytes()
    return run


def pixel_cleaning(repeat: int, folder: Path) -> str:
    rows = []
    tools = {"Carrack (JPEG frames re-encoded / JPEG-LS)": carrack(DeidOptions()),
             "deid 0.4.13 DicomCleaner (ultrasound recipe)": deid_cleaner(folder)}
    for path in pixel_files():
        source = pydicom.dcmread(path, stop_before_pixels=True)
        frames = int(source.get("NumberOfFrames") or 1)
        for name, tool in tools.items():
            output = tool(path)  # warm-up, and the output measured
            runs = max(1, repeat // max(1, frames // 30))
            start = time.perf_counter()
            for _ in range(runs):
                tool(path)
            rate = runs / (time.perf_counter() - start)
            tracemalloc.start()
            tool(path)
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            out_syntax = pydicom.dcmread(io.BytesIO(output), stop_before_pixels=True)
            rows.append([f"{path.name} ({frames} fr, {source.file_meta.TransferSyntaxUID.name})",
                         name, rate, f"{len(output) / path.stat().st_size:.2f}x", peak,
                         out_syntax.file_meta.TransferSyntaxUID.name, _outside_left(output)])
            print(f"  {path.name} {name}: {rate:.1f} files/s", file=sys.stderr)
    return table(["file", "tool", "files/s", "output / input size", "peak traced MiB",
                  "output transfer syntax", "pixels left outside regions"], rows)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=240)
    parser.add_argument("--pixel-repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"{platform.python_implementation()} {platform.python_version()}, pydicom "
          f"{pydicom.__version__}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory(prefix="carrack-deid-bench-") as tmp:
        plain = corpus(args.files, Path(tmp) / "plain", synthetic=False)
        paths = corpus(args.files, Path(tmp) / "phi")
        size = [sum(p.stat().st_size for p in ps) / len(ps) / 1024 for ps in (plain, paths)]
        print(f"\n### Tag profile: {len(paths)} files (mean {size[0]:.0f} KiB), and the same "
              f"with synthetic PHI (mean {size[1]:.0f} KiB)\n")
        print(tag_profile(paths, plain))
        print("\n### Pixel cleaning of multi-frame ultrasound\n")
        cleaned = Path(tmp) / "cleaned"
        cleaned.mkdir()
        print(pixel_cleaning(args.pixel_repeat, cleaned))


if __name__ == "__main__":
    main()
