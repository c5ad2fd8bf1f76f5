"""A seeded fuzz campaign against the readers: hostile NIfTI, MetaImage/NRRD, DICOM (files and series) and JPEG/PNG.

Cases are mutations of valid bases: the real ISLES'22 DWI (whole, and a crop keeping its header), the real DICOM
series and sample files, real Kvasir JPEGs, and synthetic files (NIfTI-2, scaled NIfTI, oblique MetaImage/NRRD, a
pydicom series, a PNG in every PIL mode, CMYK and gray JPEGs). Mutations edit header *fields* (NIfTI ``dim``,
``datatype``, ``pixdim``, ``vox_offset``, ``scl_*``, the transforms, the declared size against the file size and
``.nii.gz`` bombs; MetaImage/NRRD ``NDims``/``DimSize``/``ElementType``/``CompressedData``/``Offset``/``Spacing``/
directions and their NRRD equivalents; DICOM ``NumberOfFrames`` against the pixel data, ``SamplesPerPixel``,
``BitsAllocated``, positions, orientation, spacing, one slice of a series or all; PNG ``IHDR`` with a valid CRC, JPEG
``SOF`` sizes, bombs) as well as bytes (truncation, bit flips, windows of garbage, appended bytes).

Each case runs in a child process (``fork`` of this process, which itself never reads a mutated file:
:func:`monai_patcher.isolation.run_isolated`) under an address-space cap (``RLIMIT_AS``: this process's size +
``--memory_cap_mb``) and a timeout (``--timeout``, then killed), and is classified as:

- ``clean_error``: a ``ValueError`` (``DataError``) whose message names the case's file or folder;
- ``identical``: read, and equal to the unmutated base (the mutation did not matter);
- ``valid_variant``: read, different from the base, and equal to what an independent reader gives for the mutated
  file (nibabel for NIfTI, pydicom for DICOM, PIL + a numpy conversion for images, a plain parser for MetaImage/NRRD):
  a valid file with other content (e.g. a flipped voxel: these formats carry no checksum);
- ``silent_garbage``: read, but not what the file declares (the independent reader disagrees or refuses the file);
- ``wrong_error``: another exception type, or a message without the file;
- ``crash`` (killed by a signal), ``hang`` (past the timeout), ``memory`` (``MemoryError`` or killed by the kernel);
- ``harness_error``: a bug of this script (counted as a failure, so that it gets fixed).

    python -m benchmarks.fuzz_readers --cases 1500 --seed 24 --out benchmarks/results/fuzz_readers
    python -m benchmarks.fuzz_readers --cases 48 --seed 3 --small --out /tmp/fuzz   # what the test suite runs

``--small`` uses only small bases (crops and synthetic files); the real files come from ``../shared/data`` (or
``$MONAI_PATCHER_DATA``) when present. The counts go to ``<out>/summary.json``; the files of every case that is not
``clean_error``/``identical``/``valid_variant`` are kept in ``<out>/cases/`` with the mutation in their name.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import math
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import ROOT

DATA = Path(os.environ.get("MONAI_PATCHER_DATA", ROOT.parent / "shared" / "data"))
OUTCOMES = ("clean_error", "identical", "valid_variant", "silent_garbage", "wrong_error", "crash", "hang", "memory",
            "harness_error")
GOOD = ("clean_error", "identical", "valid_variant")


@dataclass
class Case:
    """One fuzz case: the files to write into its folder, the entry to read (a file or a folder), its family."""

    family: str  # "nifti", "metaimage", "dicom", "image"
    base: str
    mutation: str
    files: dict[str, bytes]
    entry: str
    label: bool = False  # images: read as a mask
    index: int = -1


@dataclass
class Base:
    family: str
    name: str
    files: dict[str, bytes]
    entry: str
    label: bool = False
    meta: dict = field(default_factory=dict)


# ============================================================================================================ bases


def _nifti_bytes(img) -> bytes:
    return img.to_bytes()


def make_bases(small: bool, rng: np.random.Generator) -> list[Base]:
    """The valid files the cases mutate (real ones when ``DATA`` has them)."""
    import nibabel as nib
    import SimpleITK as sitk
    from PIL import Image

    bases: list[Base] = []
    dwi_path = DATA / "ISLES-2022-case0001" / "data" / "sub-strokecase0001_ses-0001_dwi.nii.gz"
    if dwi_path.is_file():
        real = nib.load(str(dwi_path))
        crop = np.asarray(real.dataobj)[40:64, 40:60, 30:36].astype(np.float32)
        hdr = real.header.copy()
        hdr.set_data_dtype(np.float32)
        crop_img = nib.Nifti1Image(crop, real.affine, header=hdr)
        if not small:
            bases.append(Base("nifti", "isles_dwi", {"dwi.nii.gz": dwi_path.read_bytes()}, "dwi.nii.gz"))
    else:
        crop = rng.random((24, 20, 6)).astype(np.float32) * 1000
        crop_img = nib.Nifti1Image(crop, np.array([[-2, 0, 0, 100], [0, 2, 0, -90], [0, 0, 2, -60], [0, 0, 0, 1.0]]))
    raw = _nifti_bytes(crop_img)
    bases.append(Base("nifti", "isles_crop_nii", {"crop.nii": raw}, "crop.nii"))
    bases.append(Base("nifti", "isles_crop_gz", {"crop.nii.gz": gzip.compress(raw, 6)}, "crop.nii.gz"))
    c, s = math.cos(0.4), math.sin(0.4)
    oblique = np.array([[c * 1.2, -s * 1.2, 0, 10], [s * 1.2, c * 1.2, 0, -5], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    scaled = nib.Nifti1Image((rng.random((10, 9, 5)) * 3000).astype(np.int16), oblique)
    scaled.header.set_slope_inter(0.5, -10.0)
    scaled.header.set_qform(oblique, 1)
    scaled.header.set_sform(oblique, 2)
    bases.append(Base("nifti", "scaled_int16_gz", {"s.nii.gz": gzip.compress(_nifti_bytes(scaled), 6)}, "s.nii.gz"))
    four = nib.Nifti1Image(rng.random((8, 7, 5, 2)).astype(np.float32), oblique)  # (ITK here reads no NIfTI-2)
    bases.append(Base("nifti", "two_channel_4d", {"f.nii": _nifti_bytes(four)}, "f.nii"))

    # MetaImage / NRRD: the crop, oblique
    vol = sitk.GetImageFromArray(np.ascontiguousarray(crop.transpose(2, 1, 0)))
    vol.SetSpacing((1.1, 1.3, 3.0))
    vol.SetOrigin((-20.5, 14.0, 33.25))
    vol.SetDirection([c, -s, 0, s, c, 0, 0, 0, 1])
    with tempfile.TemporaryDirectory() as tmp:
        for name, compress in (("v.mha", False), ("vz.mha", True), ("v.nrrd", False), ("vz.nrrd", True),
                               ("v.mhd", False)):  # fmt: skip
            sitk.WriteImage(vol, os.path.join(tmp, name), compress)
            files = {name: Path(tmp, name).read_bytes()}
            if name == "v.mhd":
                files["v.raw"] = Path(tmp, "v.raw").read_bytes()
            bases.append(Base("metaimage", name.replace(".", "_"), files, name))

    # DICOM
    series = DATA / "DICOM-MR-brain-babymri" / "tests" / "data"
    if series.is_dir():
        files = {f"series/{p.name}": p.read_bytes() for p in sorted(series.glob("*.dcm"))}
        bases.append(Base("dicom", "babymri_series", files, "series"))
    samples = DATA / "package-bundled-samples" / "pydicom" / "data" / "test_files"
    for name in ("MR_small.dcm", "CT_small.dcm"):
        if (samples / name).is_file():
            bases.append(Base("dicom", name.lower().replace(".", "_"), {name: (samples / name).read_bytes()}, name))
    bases.append(Base("dicom", "synthetic_series", _synthetic_series(rng), "series"))

    # images
    kvasir = DATA / "Kvasir-SEG-5-samples-original-encoding" / "Kvasir-SEG"
    if kvasir.is_dir():
        for p in sorted(kvasir.glob("images/*.jpg"))[: 1 if small else 2]:
            bases.append(Base("image", f"kvasir_{p.stem[:8]}", {"k.jpg": p.read_bytes()}, "k.jpg"))
        for p in sorted(kvasir.glob("masks/*.jpg"))[:1]:
            bases.append(Base("image", f"kvasir_mask_{p.stem[:8]}", {"m.jpg": p.read_bytes()}, "m.jpg", label=True))
    rgb = rng.integers(0, 256, (21, 17, 3), dtype=np.uint8)
    modes = {
        "1": Image.fromarray(rgb[..., 0] > 127), "L": Image.fromarray(rgb[..., 0]),
        "LA": Image.fromarray(rgb[..., :2].copy(), "LA"), "P": Image.fromarray(rgb).convert("P"),
        "RGB": Image.fromarray(rgb), "RGBA": Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"),
        "I;16": Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)),
    }  # fmt: skip
    for mode, im in modes.items():
        buf = io.BytesIO()
        im.save(buf, "PNG")
        tag = mode.replace(";", "")
        bases.append(Base("image", f"png_{tag}", {f"{tag}.png": buf.getvalue()}, f"{tag}.png"))
    bases.append(Base("image", "png_P_mask", {"pm.png": _png_of(modes["P"])}, "pm.png", label=True))
    for mode in ("L", "CMYK"):
        buf = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buf, "JPEG", quality=90)
        bases.append(Base("image", f"jpeg_{mode}", {f"{mode}.jpg": buf.getvalue()}, f"{mode}.jpg"))
    return bases


def _png_of(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _synthetic_series(rng: np.random.Generator) -> dict[str, bytes]:
    """Four implicit-VR slices written by pydicom, 2.5 mm apart, with a rescale slope."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ImplicitVRLittleEndian, MRImageStorage

    files = {}
    for k in range(4):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.9.7.{k + 1}"
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "MR", "1.2.826.0.1.3680043.9.7", "1.2.826.0.1.3680043.9.7.0"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [-30.0, -20.0, 2.5 * k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.9, 0.8], 2.5
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 12, 10, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = rng.integers(0, 4096, (12, 10), dtype=np.uint16).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files[f"series/s{k}.dcm"] = buf.getvalue()
    return files


# ============================================================================================================ mutations

_F32 = [0.0, -1.0, -1.5, 1e-30, 1e30, 3.4e38, float("nan"), float("inf"), -float("inf"), 2.0, 0.5]
_I16 = [0, -1, 1, 2, 3, 4, 5, 7, 8, 16, 64, 255, 256, 512, 1024, 2048, 32767, -32768]
_NIFTI1 = {  # field: (offset, struct format, values)
    **{f"dim{i}": (40 + 2 * i, "<h", _I16) for i in range(8)},
    "datatype": (70, "<h", [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 2304, 3, 999]),
    "bitpix": (72, "<h", [0, 1, 7, 8, 16, 24, 32, 64, 128, -8]),
    **{f"pixdim{i}": (76 + 4 * i, "<f", _F32) for i in range(5)},
    "vox_offset": (108, "<f", [0.0, 1.0, 348.0, 351.0, 352.0, 352.5, 368.0, 1e9, float("nan"), -352.0, 4096.0]),
    "scl_slope": (112, "<f", _F32), "scl_inter": (116, "<f", _F32),
    "qform_code": (252, "<h", [-1, 0, 1, 2, 3, 4, 5, 6, 100]), "sform_code": (254, "<h", [-1, 0, 1, 2, 3, 4, 5, 6, 100]),
    **{f"quatern_{c}": (256 + 4 * i, "<f", _F32) for i, c in enumerate("bcd")},
    **{f"qoffset_{c}": (268 + 4 * i, "<f", _F32) for i, c in enumerate("xyz")},
    **{f"srow_{r}{j}": (280 + 16 * k + 4 * j, "<f", _F32) for k, r in enumerate("xyz") for j in range(4)},
    "magic": (344, "4s", [b"n+2\x00", b"ni1\x00", b"\x00\x00\x00\x00", b"n+1\xff", b"N+1\x00"]),
    "sizeof_hdr": (0, "<i", [0, -1, 540, 347, 2**31 - 1, 348 << 8]),
    "extension": (348, "4s", [b"\x01\x00\x00\x00", b"\xff\xff\xff\xff"]),
}  # fmt: skip
_NIFTI2 = {
    **{f"dim{i}": (16 + 8 * i, "<q", [0, -1, 1, 2, 3, 7, 8, 2**40, -2**40]) for i in range(8)},
    "datatype": (12, "<h", [0, 2, 4, 16, 32, 64, 999]), "bitpix": (14, "<h", [0, 8, 7, 64]),
    **{f"pixdim{i}": (104 + 8 * i, "<d", _F32) for i in range(5)},
    "vox_offset": (168, "<q", [0, 1, 540, 544, 545, 10**12, -544]),
    "scl_slope": (176, "<d", _F32), "scl_inter": (184, "<d", _F32),
    "qform_code": (344, "<i", [-1, 0, 1, 9]), "sform_code": (348, "<i", [-1, 0, 1, 9]),
    **{f"srow_x{j}": (400 + 8 * j, "<d", _F32) for j in range(4)},
    "magic": (4, "8s", [b"n+1\x00\r\n\x1a\n", b"\x00" * 8, b"n+2\x00\x00\x00\x00\x00"]),
}  # fmt: skip


def _bytes_ops(data: bytes, r: random.Random, header_len: int) -> tuple[str, bytes]:
    """A byte-level mutation: truncate, flips (header or anywhere), a window of garbage, appended bytes."""
    b = bytearray(data)
    op = r.choice(["truncate", "truncate_header", "flip_header", "flip_any", "window", "append", "zero_tail"])
    if op == "truncate":
        cut = r.randrange(0, max(len(b), 1))
        return f"truncate@{cut}", bytes(b[:cut])
    if op == "truncate_header":
        cut = r.randrange(0, max(min(header_len, len(b)), 1))
        return f"truncate@{cut}", bytes(b[:cut])
    if op in ("flip_header", "flip_any"):
        span = min(header_len, len(b)) if op == "flip_header" else len(b)
        n = r.randint(1, 16)
        for _ in range(n):
            b[r.randrange(span)] ^= 1 << r.randrange(8)
        return f"{op}x{n}", bytes(b)
    if op == "window":
        pos, n = r.randrange(len(b)), r.randint(1, 64)
        b[pos : pos + n] = bytes(r.getrandbits(8) for _ in range(min(n, len(b) - pos)))
        return f"window@{pos}+{n}", bytes(b)
    if op == "append":
        n = r.choice([1, 2, 16, 4096])
        return f"append{n}", bytes(b) + bytes(r.getrandbits(8) for _ in range(n))
    n = r.randint(1, max(len(b) // 4, 1))
    return f"zero_tail{n}", bytes(b[:-n]) + bytes(n)


def _nifti_field(raw: bytes, r: random.Random) -> tuple[str, bytes]:
    table = _NIFTI2 if struct.unpack("<i", raw[:4])[0] == 540 else _NIFTI1
    name = r.choice(sorted(table))
    offset, fmt, values = table[name]
    value = r.choice(values)
    b = bytearray(raw)
    b[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return f"{name}={value!r}", bytes(b)


def _nifti_size_lie(raw: bytes, r: random.Random) -> tuple[str, bytes]:
    """Change one dim by +-1 (or make it huge: a bomb) so the declared size no longer matches the voxels."""
    v2 = struct.unpack("<i", raw[:4])[0] == 540
    off, fmt = (16, "<q") if v2 else (40, "<h")
    size = struct.calcsize(fmt)
    dims = list(struct.unpack_from(f"<8{fmt[1]}", raw, off))
    i = r.randint(1, max(1, min(dims[0], 4)))
    new = r.choice([dims[i] - 1, dims[i] + 1, dims[i] * 2, 1024 if not v2 else 2**20])
    b = bytearray(raw)
    b[off + size * i : off + size * (i + 1)] = struct.pack(fmt, new)
    return f"dim{i}:{dims[i]}->{new}", bytes(b)


def mutate_nifti(base: Base, r: random.Random) -> tuple[str, dict[str, bytes]]:
    (name, data), = base.files.items()
    gz = name.endswith(".gz")
    raw = gzip.decompress(data) if gz else data
    op = r.choices(["field", "size", "bytes", "gz", "bomb"], weights=[5, 2, 2, 1 if gz else 0, 1 if gz else 0])[0]
    if op == "field":
        how, raw = _nifti_field(raw, r)
    elif op == "size":
        how, raw = _nifti_size_lie(raw, r)
    elif op == "bytes":
        how, raw = _bytes_ops(raw, r, 352)
    elif op == "gz":
        how, blob = _bytes_ops(data, r, 64)
        return f"gz_{how}", {name: blob}
    else:  # a small .nii.gz declaring a huge volume
        b = bytearray(raw[:352])
        n = r.choice([512, 1024, 2048])
        b[42:48] = struct.pack("<3h", n, n, n)
        b[40:42] = struct.pack("<h", 3)
        return f"bomb{n}^3", {name: gzip.compress(bytes(b) + bytes(r.choice([1 << 16, 1 << 22])), 9)}
    return how, {name: gzip.compress(raw, 1) if gz else raw}


_META_VALUES = {
    "NDims": ["-1", "0", "1", "2", "4", "9", "1000", "abc", "3.5", ""],
    "DimSize": ["0 6 5", "-1 6 5", "7 6", "7 6 5 4", "100000 100000 100000", "24 20 5", "24 20 7", "20 24 6", "x y z"],
    "ElementType": ["MET_UCHAR", "MET_DOUBLE", "MET_SHORT", "MET_LONG_ARRAY", "MET_FOO", "MET_STRING", ""],
    "ElementNumberOfChannels": ["0", "2", "-1", "1000000"],
    "ElementSpacing": ["0 1 1", "-1 1 1", "nan 1 1", "inf 1 1", "1e308 1 1", "1 1", "2 2 2"],
    "Offset": ["nan 0 0", "inf 0 0", "1e308 0 0", "1 2", "0 0 0", "1e5 -1e5 3"],
    "TransformMatrix": ["0 0 0 0 0 0 0 0 0", "1 0 0 1 0 0 0 0 1", "nan 0 0 0 1 0 0 0 1", "2 0 0 0 2 0 0 0 2",
                        "1 0 0 0 1 0 0 0 1", "0 1 0 1 0 0 0 0 1", "1 0 0"],
    "CompressedData": ["True", "False", "maybe"],
    "CompressedDataSize": ["0", "1", "-5", "99999999", "10"],
    "BinaryData": ["False", "maybe"],
    "BinaryDataByteOrderMSB": ["True", "junk"],
    "HeaderSize": ["-1", "-2", "100", "999999"],
    "ElementDataFile": ["LIST", "missing.raw", "../../../../etc/passwd", "v%03d.raw 1 3 1", "LOCAL"],
    "ObjectType": ["Mesh", "Image"],
}  # fmt: skip
_NRRD_VALUES = {
    "dimension": ["-1", "0", "1", "2", "4", "17", "abc"],
    "sizes": ["0 20 6", "24 20", "24 20 6 2", "100000 100000 100000", "24 20 5", "24 20 7", "-24 20 6"],
    "type": ["block", "double", "uchar", "short", "foo", "long double"],
    "encoding": ["bzip2", "gzip", "raw", "ascii", "hex", "zrl"],
    "endian": ["big", "middle", "little"],
    "space directions": ["none none none", "(1,0,0) (0,1,0) none", "(1,0,0) (0,1,0) (0,1,0)", "(nan,0,0) (0,1,0) (0,0,1)",
                         "(1,0,0) (0,1,0)", "(0,0,0) (0,1,0) (0,0,1)", "(1e308,0,0) (0,1,0) (0,0,1)",
                         "(2,0,0) (0,2,0) (0,0,2)"],
    "space origin": ["(nan,0,0)", "(1e308,0,0)", "(0,0)", "(0,0,0)", "none"],
    "space": ["right-anterior-superior", "left-anterior-superior", "scanner-xyz", "nowhere"],
    "kinds": ["vector domain domain", "domain domain", "list list list", "space space space"],
    "byte skip": ["-1", "-2", "10", "99999999"],
    "line skip": ["1", "-1", "5"],
    "data file": ["missing.raw", "LIST", "v%d.raw 1 3 1"],
    "spacings": ["1 1 1", "nan nan nan", "0 1 1"],
}  # fmt: skip


def mutate_metaimage(base: Base, r: random.Random) -> tuple[str, dict[str, bytes]]:
    files = dict(base.files)
    name = base.entry
    data = files[name]
    nrrd = name.endswith(".nrrd")
    sep = b"\n\n" if nrrd else b"ElementDataFile = LOCAL\n"
    head, found, body = data.partition(sep) if sep in data else (data, b"", b"")
    lines = head.decode("latin-1").split("\n")
    key_sep = ": " if nrrd else " = "
    op = r.choices(["field", "delete", "duplicate", "data", "bytes", "bomb", "toggle"], weights=[6, 1, 1, 2, 2, 1, 1])[0]
    if op in ("field", "delete", "duplicate"):
        table = _NRRD_VALUES if nrrd else _META_VALUES
        key = r.choice(sorted(table))
        if op == "field" and key == "ElementDataFile" and not nrrd:
            value = r.choice(table[key])
            return f"ElementDataFile={value}", {**files, name: head + b"ElementDataFile = " + value.encode() + b"\n" + body}
        idx = [i for i, ln in enumerate(lines) if ln.split(key_sep.strip(), 1)[0].strip() == key]
        if op == "field":
            value = r.choice(table[key])
            if idx:
                lines[idx[0]] = f"{key}{key_sep}{value}"
            else:
                lines.insert(r.randint(1, len(lines)), f"{key}{key_sep}{value}")
            how = f"{key}={value}"
        elif op == "delete" and idx:
            del lines[idx[0]]
            how = f"delete_{key}"
        elif idx:
            lines.insert(idx[0], lines[idx[0]])
            how = f"duplicate_{key}"
        else:
            return _bytes_mutation(files, name, r)
        return how, {**files, name: "\n".join(lines).encode("latin-1") + found + body}
    if op == "data":
        target = "v.raw" if "v.raw" in files else name
        payload = files[target] if target != name else body
        how, payload = _bytes_ops(payload, r, 16)
        if target != name:
            return f"raw_{how}", {**files, target: payload}
        return f"data_{how}", {**files, name: head + found + payload}
    if op == "bomb":
        n = r.choice([1024, 4096])
        key = "sizes" if nrrd else "DimSize"
        lines = [f"{key}{key_sep}{n} {n} {n}" if ln.startswith(key) else ln for ln in lines]
        if not nrrd:
            stream = zlib.compress(bytes(1 << 22), 9)
            lines = [ln for ln in lines if not ln.startswith("CompressedDataSize")]
            lines = [(f"CompressedData = True\nCompressedDataSize = {len(stream)}" if ln.startswith("CompressedData")
                      else ln) for ln in lines]  # fmt: skip
        else:
            lines = [("encoding: gzip" if ln.startswith("encoding") else ln) for ln in lines]
            stream = gzip.compress(bytes(1 << 22), 9)
        return f"bomb{n}^3", {**files, name: "\n".join(lines).encode() + found + stream}
    if op == "toggle":  # say compressed when it is not, or the reverse
        if nrrd:
            lines = [("encoding: raw" if "gzip" in ln else "encoding: gzip") if ln.startswith("encoding") else ln
                     for ln in lines]  # fmt: skip
        else:
            lines = [("CompressedData = False" if "True" in ln else "CompressedData = True")
                     if ln.startswith("CompressedData ") else ln for ln in lines]  # fmt: skip
        return "toggle_compression", {**files, name: "\n".join(lines).encode() + found + body}
    return _bytes_mutation(files, name, r)


def _bytes_mutation(files: dict[str, bytes], name: str, r: random.Random) -> tuple[str, dict[str, bytes]]:
    how, blob = _bytes_ops(files[name], r, 400)
    return how, {**files, name: blob}


_DICOM_VALUES = {
    "NumberOfFrames": [0, 2, 3, -1, "abc", 1000000],
    "SamplesPerPixel": [0, 3, 4, 65535],
    "BitsAllocated": [0, 1, 8, 12, 32, 64, 65535],
    "BitsStored": [0, 17, 64, 1],
    "HighBit": [0, 31, 65535],
    "PixelRepresentation": [1, 2],
    "Rows": [0, 1, 65535, "+1", "-1"],
    "Columns": [0, 1, 65535, "+1", "-1"],
    "PhotometricInterpretation": ["RGB", "PALETTE COLOR", "YBR_FULL_422", "XYZ", "MONOCHROME1"],
    "PlanarConfiguration": [0, 1, 7],
    "ImagePositionPatient": [None, ["nan", 0, 0], [1e308, 0, 0], [0, 0], ["inf", "-inf", 0], [100, 100, 100]],
    "ImageOrientationPatient": [None, [1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], ["nan", 0, 0, 0, 1, 0], [1, 0, 0],
                                [0, 1, 0, 1, 0, 0], [2, 0, 0, 0, 2, 0]],
    "PixelSpacing": [None, [0, 0], ["nan", 1], [-1, 1], [1e308, 1], [2.0, 2.0], [1]],
    "SeriesInstanceUID": ["1.2.3.999"],
    "RescaleSlope": [0, "nan", 1e30, 2, -1],
    "RescaleIntercept": ["nan", 1e30, -1024],
    "InstanceNumber": [None, -5, 99999],
}  # fmt: skip


def _pydicom_edit(blob: bytes, r: random.Random) -> tuple[str, bytes]:
    """An attribute of a DICOM file set to a hostile value (pydicom); a byte mutation where pydicom cannot write it."""
    state = r.getstate()
    try:
        return _pydicom_edit_unchecked(blob, r)
    except Exception:  # noqa: BLE001 - pydicom refuses that value
        r.setstate(state)
        r.random()
        return _bytes_ops(blob, r, 1024)


def _pydicom_edit_unchecked(blob: bytes, r: random.Random) -> tuple[str, bytes]:
    import pydicom
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    ds = pydicom.dcmread(io.BytesIO(blob), force=True)
    op = r.choices(["attr", "pixels", "syntax"], weights=[8, 2, 1])[0]
    if op == "pixels":
        pix = ds.PixelData
        n = r.choice([len(pix) // 2, len(pix) - 2, len(pix) + 2, 2 * len(pix), 0])
        ds.PixelData = (pix * 3)[:n]
        how = f"PixelData:{len(pix)}->{n}"
    elif op == "syntax":
        from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

        uid = r.choice([ImplicitVRLittleEndian, ExplicitVRBigEndian, "1.2.840.10008.1.2.4.50"])
        # the data set stays encoded as it was (a lie): patch the UID in the file meta group, same length padded
        old = str(ds.file_meta.TransferSyntaxUID).encode()
        at = blob.find(old, 128, 1024)
        if at < 0 or len(uid) > len(old) + (len(old) % 2):
            return _bytes_ops(blob, r, 1024)
        new = uid.encode().ljust(len(old) + (len(old) % 2), b"\x00")[: len(old) + (len(old) % 2)]
        return f"TransferSyntaxUID={uid}", blob[:at] + new + blob[at + len(new) :]
    else:
        key = r.choice(sorted(_DICOM_VALUES))
        value = r.choice(_DICOM_VALUES[key])
        if value is None:
            if key in ds:
                delattr(ds, key)
        elif value in ("+1", "-1") and key in ds:
            ds[key].value = (int(ds[key].value) + int(value)) % 65536
        else:
            setattr(ds, key, value)
        how = f"{key}={value}"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return how, buf.getvalue()


def mutate_dicom(base: Base, r: random.Random) -> tuple[str, dict[str, bytes]]:
    files = dict(base.files)
    names = sorted(files)
    op = r.choices(["one", "two", "bytes", "series"], weights=[6, 1, 3, 2 if len(names) > 1 else 0])[0]
    if op in ("one", "two"):
        hows = []
        for name in r.sample(names, min(len(names), 1 if op == "one" else 2)):
            how, files[name] = _pydicom_edit(files[name], r)
            hows.append(f"{Path(name).stem}:{how}")
        return "+".join(hows), files
    if op == "bytes":
        name = r.choice(names)
        how, files[name] = _bytes_ops(files[name], r, 1024)
        return f"{Path(name).stem}:{how}", files
    kind = r.choice(["drop_slice", "duplicate_slice", "no_positions", "stray_file"])
    if kind == "drop_slice":  # a gap in the slice positions (the middle file deleted)
        del files[names[len(names) // 2]]
    elif kind == "duplicate_slice":
        files[names[0].replace(".dcm", "_copy.dcm")] = files[names[0]]
    elif kind == "no_positions":
        import pydicom

        for name in names:
            ds = pydicom.dcmread(io.BytesIO(files[name]))
            del ds.ImagePositionPatient
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=False)
            files[name] = buf.getvalue()
    else:
        files["series/notes.dcm"] = b"not a DICOM file at all" * 10
    return f"series_{kind}", files


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def _png_join(chunks) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)) for kind, body in chunks
    )


def mutate_image(base: Base, r: random.Random) -> tuple[str, dict[str, bytes]]:
    (name, data), = base.files.items()
    png = data.startswith(b"\x89PNG")
    op = r.choices(["bytes", "header", "bomb"], weights=[5, 3, 1])[0]
    if op == "bytes":
        how, blob = _bytes_ops(data, r, 64 if png else 600)
        return how, {name: blob}
    if png:
        chunks = _png_chunks(data)
        kind, ihdr = chunks[0]
        w, h, depth, colour = struct.unpack_from(">IIBB", ihdr)
        if op == "bomb":
            n = r.choice([30000, 100000, 2**31 - 1])
            ihdr = struct.pack(">II", n, n) + ihdr[8:]
            idat = zlib.compress(bytes(1 << 20), 9)
            return f"png_bomb{n}", {name: _png_join([(b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", b"")])}
        field_ = r.choice(["width", "height", "depth", "colour", "drop_iend", "drop_idat", "extra_idat"])
        if field_ in ("width", "height"):
            value = r.choice([0, 1, w + 1, h - 1, 2 * w, 65535])
            ihdr = struct.pack(">II", value if field_ == "width" else w, value if field_ == "height" else h) + ihdr[8:]
        elif field_ == "depth":
            value = r.choice([1, 2, 4, 8, 16, 3, 0])
            ihdr = ihdr[:8] + bytes([value]) + ihdr[9:]
        elif field_ == "colour":
            value = r.choice([0, 2, 3, 4, 6, 1, 7])
            ihdr = ihdr[:9] + bytes([value]) + ihdr[10:]
        else:
            value = ""
        rest = chunks[1:]
        if field_ == "drop_iend":
            rest = [c for c in rest if c[0] != b"IEND"]
        elif field_ == "drop_idat":
            rest = [c for c in rest if c[0] != b"IDAT"]
        elif field_ == "extra_idat":
            rest = rest[:-1] + [(b"IDAT", zlib.compress(b"\x00" * 100))] + rest[-1:]
        blob = _png_join([(kind, ihdr)] + rest)
        if field_ == "drop_iend":
            blob = blob[:-12] if blob.endswith(b"IEND\xaeB`\x82") else blob
        return f"png_{field_}={value}", {name: blob}
    # JPEG: the frame header's sizes and components, with valid markers
    sof = next((i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2)), None)
    if sof is None:
        return _bytes_mutation({name: data}, name, r)
    b = bytearray(data)
    if op == "bomb":
        b[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
        return "jpeg_sof_65500x65500", {name: bytes(b)}
    field_ = r.choice(["height", "width", "components", "precision", "drop_eoi", "double_eoi"])
    if field_ in ("height", "width"):
        value = r.choice([0, 1, 2, 8, 65535])
        at = sof + 5 if field_ == "height" else sof + 7
        b[at : at + 2] = struct.pack(">H", value)
    elif field_ == "components":
        value = r.choice([0, 2, 4, 255])
        b[sof + 9] = value
    elif field_ == "precision":
        value = r.choice([0, 12, 16, 255])
        b[sof + 4] = value
    elif field_ == "drop_eoi":
        value = ""
        b = b[:-2] if b.endswith(b"\xff\xd9") else b
    else:
        value = ""
        eoi = data.rfind(b"\xff\xd9")
        b = b[: len(b) // 2] + b"\xff\xd9" + b[len(b) // 2 :] if eoi > 0 else b
    return f"jpeg_{field_}={value}", {name: bytes(b)}


MUTATORS = {"nifti": mutate_nifti, "metaimage": mutate_metaimage, "dicom": mutate_dicom, "image": mutate_image}


def generate(bases: list[Base], n: int, seed: int) -> list[Case]:
    """``n`` cases, spread evenly over the families and, inside a family, over its bases."""
    r = random.Random(seed)
    families = sorted({b.family for b in bases})
    by_family = {f: [b for b in bases if b.family == f] for f in families}
    cases = []
    for i in range(n):
        family = families[i % len(families)]
        base = by_family[family][(i // len(families)) % len(by_family[family])]
        mutation, files = MUTATORS[family](base, r)
        cases.append(Case(family, base.name, mutation, files, base.entry, base.label, i))
    return cases


# ============================================================================================================ reading


def _silence() -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")


def read_ours(path: str, family: str, label: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """What the pipelines get: ``(array, affine)``; images ``H x W[ x C]`` (no affine)."""
    if family == "image":
        from monai_patcher.data import PolypImageReader

        return PolypImageReader(label=label).read_array(path)[0], None
    from monai.transforms import LoadImage

    from monai_patcher.data import SimpleITKReader

    img = LoadImage(reader=SimpleITKReader(), image_only=True)(path)
    return np.asarray(img.array), np.asarray(img.affine, dtype=float)


def read_reference(path: str, family: str, label: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """An independent reading of the same file (raises if that reader refuses it)."""
    if family == "nifti":
        from monai.data import NibabelReader
        from monai.transforms import LoadImage

        img = LoadImage(reader=NibabelReader(dtype=None), image_only=True)(path)
        return np.asarray(img.array), np.asarray(img.affine, dtype=float)
    if family == "metaimage":
        return _reference_metaimage(path) if path.endswith((".mha", ".mhd")) else _reference_nrrd(path)
    if family == "dicom":
        return _reference_dicom(path)
    return _reference_image(path, label)


_NP = {"MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_INT": "i4", "MET_UINT": "u4",
       "MET_LONG": "i4", "MET_ULONG": "u4", "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4",
       "MET_DOUBLE": "f8"}  # fmt: skip


def _affine(direction: np.ndarray, spacing, origin) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = direction @ np.diag(spacing)
    a[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a  # ITK's LPS -> RAS


def _reference_metaimage(path: str):
    raw = Path(path).read_bytes()
    head, sep, body = raw.partition(b"ElementDataFile = ")
    f = dict(ln.split(" = ", 1) for ln in head.decode("latin-1").splitlines() if " = " in ln)
    datafile, _, body = body.partition(b"\n")
    if datafile != b"LOCAL":
        body = (Path(path).parent / datafile.decode()).read_bytes()
    assert int(f["NDims"]) == 3 and f.get("BinaryData", "True") == "True"
    size = [int(v) for v in f["DimSize"].split()]
    nc = int(f.get("ElementNumberOfChannels", "1"))
    dtype = np.dtype(_NP[f["ElementType"]]).newbyteorder(">" if f.get("BinaryDataByteOrderMSB") == "True" else "<")
    if f.get("CompressedData") == "True":
        body = zlib.decompress(body)
    n = int(np.prod(size)) * nc
    assert len(body) == n * dtype.itemsize, "voxel data size"
    arr = np.frombuffer(body, dtype).reshape(size[::-1] + ([nc] if nc > 1 else []))
    arr = arr.transpose(2, 1, 0) if nc == 1 else arr.transpose(2, 1, 0, 3)
    spacing = [float(v) for v in f.get("ElementSpacing", "1 1 1").split()]
    origin = [float(v) for v in f.get("Offset", "0 0 0").split()]
    direction = np.array([float(v) for v in f.get("TransformMatrix", "1 0 0 0 1 0 0 0 1").split()]).reshape(3, 3).T
    assert len(spacing) == 3 and len(origin) == 3 and min(spacing) > 0
    return arr, _affine(direction, spacing, origin)


def _reference_nrrd(path: str):
    raw = Path(path).read_bytes()
    head, _, body = raw.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    assert lines[0].startswith("NRRD")
    f = dict(ln.split(": ", 1) for ln in lines[1:] if ": " in ln and not ln.startswith("#"))
    sizes = [int(v) for v in f["sizes"].split()]
    assert int(f["dimension"]) == 3 and len(sizes) == 3 and f.get("kinds", "domain domain domain").split() == ["domain"] * 3
    types = {"float": "f4", "double": "f8", "short": "i2", "unsigned char": "u1", "uchar": "u1"}
    dtype = np.dtype(types[f["type"]]).newbyteorder(">" if f.get("endian") == "big" else "<")
    if f["encoding"] == "gzip":
        body = gzip.decompress(body)
    else:
        assert f["encoding"] == "raw"
    assert len(body) == int(np.prod(sizes)) * dtype.itemsize, "voxel data size"
    arr = np.frombuffer(body, dtype).reshape(sizes[::-1]).transpose(2, 1, 0)
    flip = {"left-posterior-superior": [1, 1, 1], "right-anterior-superior": [-1, -1, 1],
            "left-anterior-superior": [1, -1, 1]}[f["space"]]  # to ITK's LPS
    vectors = [[float(c) for c in v.strip("()").split(",")] for v in f["space directions"].split()]
    cols = np.diag(flip) @ np.array(vectors).T  # column j: direction of axis j times its spacing
    spacing = np.linalg.norm(cols, axis=0)
    origin = np.diag(flip) @ [float(c) for c in f["space origin"].strip("()").split(",")]
    return arr, _affine(cols / spacing, spacing, origin)


def _reference_dicom(path: str):
    import pydicom

    files = sorted(Path(path).glob("*")) if os.path.isdir(path) else [Path(path)]
    slices = []
    for p in files:
        ds = pydicom.dcmread(p)
        assert "PixelData" in ds
        slices.append(ds)
    if len(slices) > 1:  # a folder holding several series: the one with the most slices is read (documented)
        groups: dict[str, list] = {}
        for d in slices:
            groups.setdefault(str(d.SeriesInstanceUID), []).append(d)
        slices = max(groups.values(), key=len)
    iop = np.array([float(v) for v in slices[0].ImageOrientationPatient])
    assert iop.size == 6
    normal = np.cross(iop[:3], iop[3:])
    if len(slices) > 1:
        slices.sort(key=lambda d: float(np.dot([float(v) for v in d.ImagePositionPatient], normal)))
    from pydicom.pixels import apply_modality_lut

    arrays = [np.asarray(apply_modality_lut(d.pixel_array, d), dtype=float) for d in slices]
    assert all(a.ndim == 2 for a in arrays) and len({a.shape for a in arrays}) == 1
    vol = np.stack([a.T for a in arrays], axis=-1)  # (columns = x, rows = y, z)
    ps = [float(v) for v in slices[0].PixelSpacing]
    pos = [np.array([float(v) for v in d.ImagePositionPatient]) for d in slices]
    # a single slice: ITK's z spacing is SpacingBetweenSlices, else 1 mm
    dz = float(np.mean(np.diff([np.dot(p, normal) for p in pos]))) if len(pos) > 1 else float(
        getattr(slices[0], "SpacingBetweenSlices", None) or 1.0)  # fmt: skip
    direction = np.stack([iop[:3], iop[3:], normal], axis=1)
    return vol, _affine(direction, [ps[1], ps[0], dz], pos[0])


def _reference_image(path: str, label: bool):
    """PIL's decoding + each mode's conversion written out in numpy."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        a = np.asarray(im)
        if mode == "P" and not label:
            pal = np.asarray(im.getpalette(), dtype=np.uint8).reshape(-1, 3)
            return pal[a], None
        if mode == "CMYK":
            c, k = a[..., :3].astype(float), a[..., 3:].astype(float)
            return np.round((255 - c) * (255 - k) / 255), None
    if mode == "1":
        a = a.astype(np.uint8) * 255
    elif mode == "I;16":
        a = a.astype(np.float64) * (255 / 65535) if not label else a
    elif mode in ("LA", "RGBA"):
        a = a[..., :-1]
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not label and a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    return a, None


def _same(a, b) -> bool:
    (x, xa), (y, ya) = a, b
    if x.shape != y.shape:
        return False
    if not np.allclose(np.asarray(x, float), np.asarray(y, float), rtol=1e-5, atol=1e-3, equal_nan=True):
        return False
    if xa is None or ya is None:
        return xa is None and ya is None
    return xa.shape == ya.shape and np.allclose(xa, ya, rtol=1e-5, atol=1e-3, equal_nan=True)


def classify(case: Case, folder: str, base_result) -> dict:
    """Read the case like the pipelines do and classify the outcome (runs in the child)."""
    path = os.path.join(folder, case.entry)
    try:
        ours = read_ours(path, case.family, case.label)
    except ValueError as e:
        ok = folder in str(e)
        return {"outcome": "clean_error" if ok else "wrong_error", "detail": str(e)[-400:]}
    except MemoryError as e:
        return {"outcome": "memory", "detail": f"MemoryError: {e}"}
    except Exception as e:  # noqa: BLE001 - any other type is the finding
        return {"outcome": "wrong_error", "detail": f"{type(e).__name__}: {e}"[-400:] + traceback.format_exc()[-800:]}
    if base_result is not None and _same(ours, base_result):
        return {"outcome": "identical"}
    try:
        ref = read_reference(path, case.family, case.label)
    except MemoryError:
        return {"outcome": "memory", "detail": "MemoryError in the reference reader"}
    except Exception as e:  # noqa: BLE001
        return {"outcome": "silent_garbage", "detail": f"read, but the independent reader refuses it: "
                f"{type(e).__name__}: {e}"[:400]}  # fmt: skip
    if _same(ours, ref):
        return {"outcome": "valid_variant"}
    return {"outcome": "silent_garbage", "detail": f"differs from the independent reader: shapes {ours[0].shape} vs "
            f"{ref[0].shape}, affines {None if ours[1] is None else np.round(ours[1], 3).tolist()} vs "
            f"{None if ref[1] is None else np.round(ref[1], 3).tolist()}"}  # fmt: skip


# ============================================================================================================ running


def in_child(fn, timeout: int, cap: int) -> dict:
    """``fn()`` (returning a JSON-able dict) in a forked child under ``RLIMIT_AS`` (+``cap`` bytes) and a timeout
    (:func:`monai_patcher.isolation.run_isolated`); how the child died is an outcome."""
    from monai_patcher.isolation import run_isolated

    out = run_isolated(fn, timeout, max_address_space=cap, describe_error=lambda e: traceback.format_exc()[-3000:])
    if out.ok:
        return out.value
    if out.timed_out:
        return {"outcome": "hang", "detail": f"no result within {timeout} s"}
    if out.signal:  # a SIGKILL not sent by the timeout: the kernel's OOM killer
        return {"outcome": "memory" if out.signal == "SIGKILL" else "crash", "detail": f"killed by {out.signal}"}
    if out.exception_type == "MemoryError":
        return {"outcome": "memory", "detail": out.error}
    return {"outcome": "harness_error", "detail": out.error}  # classify() catches what the readers raise


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for rel, blob in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(blob)


def run(cases_n: int, seed: int, out: Path, small: bool, timeout: int, cap_mb: int, log=None, command: str = "") -> dict:
    """Generate and run the campaign; write ``<out>/summary.json``; return the summary."""
    log = log or (lambda text: print(text, flush=True))
    out.mkdir(parents=True, exist_ok=True)
    bases = make_bases(small, np.random.default_rng(seed))
    cap = cap_mb << 20
    work = Path(tempfile.mkdtemp(prefix="fuzz_readers_"))
    references: dict[str, object] = {}
    try:
        for base in bases:  # the unmutated results, read in a child too (the parent never runs a reader)
            folder = work / f"base_{base.name}"
            _write(folder, base.files)

            def read_base(base=base, folder=folder):
                _silence()
                a, aff = read_ours(str(folder / base.entry), base.family, base.label)
                ref = read_reference(str(folder / base.entry), base.family, base.label)
                np.save(folder / "ours.npy", a)
                return {"outcome": "ok", "affine": None if aff is None else aff.tolist(), "agree": _same((a, aff), ref)}

            res = in_child(read_base, timeout * 3, cap)
            if res.get("outcome") != "ok" or not res.get("agree"):
                raise RuntimeError(f"base {base.name} does not read, or the reference reader disagrees: {res}")
            aff = res["affine"]
            references[base.name] = (np.load(folder / "ours.npy"), None if aff is None else np.asarray(aff))
        cases = generate(bases, cases_n, seed)
        counts = {o: 0 for o in OUTCOMES}
        by_family: dict[str, dict[str, int]] = {}
        findings = []
        start = time.monotonic()
        for case in cases:
            folder = work / f"case_{case.index:05d}"
            _write(folder, case.files)

            def one(case=case, folder=folder):
                _silence()
                return classify(case, str(folder), references[case.base])

            res = in_child(one, timeout, cap)
            outcome = res["outcome"]
            counts[outcome] += 1
            by_family.setdefault(case.family, {o: 0 for o in OUTCOMES})[outcome] += 1
            if outcome not in GOOD:
                keep = out / "cases" / f"{case.index:05d}_{case.base}_{_safe(case.mutation)}"
                shutil.rmtree(keep, ignore_errors=True)
                _write(keep, case.files)
                findings.append({"case": case.index, "family": case.family, "base": case.base,
                                 "mutation": case.mutation, "outcome": outcome, "detail": res.get("detail", ""),
                                 "files": str(keep)})  # fmt: skip
                log(f"[{case.index}] {case.base} {case.mutation}: {outcome}: {res.get('detail', '')[:300]}")
            shutil.rmtree(folder, ignore_errors=True)
            if (case.index + 1) % 100 == 0:
                log(f"{case.index + 1} cases, {time.monotonic() - start:.0f} s: {counts}")
        seconds = time.monotonic() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "command": command,
        "seed": seed, "cases": len(cases), "small": small, "timeout_s": timeout, "memory_cap_mb": cap_mb,
        "bases": [f"{b.family}:{b.name}" for b in bases], "counts": counts, "by_family": by_family,
        "failures": sum(counts[o] for o in OUTCOMES if o not in GOOD), "seconds": round(seconds, 1),
        "findings": findings,
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "=+-._" else "_" for c in text)[:80]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz_readers")
    ap.add_argument("--small", action="store_true", help="small bases only (crops, synthetic files)")
    ap.add_argument("--timeout", type=int, default=30, help="seconds per case")
    ap.add_argument("--memory_cap_mb", type=int, default=2048, help="address space a case may add (RLIMIT_AS)")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # no thread pools in this process, which forks the cases
    import monai_patcher.data  # noqa: F401 - imported before forking: the cases do not pay for it

    command = " ".join(["python -m benchmarks.fuzz_readers"] + list(sys.argv[1:] if argv is None else argv))
    summary = run(args.cases, args.seed, args.out, args.small, args.timeout, args.memory_cap_mb, command=command)
    print(json.dumps({k: summary[k] for k in ("cases", "counts", "failures", "seconds")}))
    for family, counts in summary["by_family"].items():
        print(family, {k: v for k, v in counts.items() if v})
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
