"""MetaImage (``.mha``/``.mhd``) header checks before SimpleITK reads the voxels.

SimpleITK reports a payload shorter than the header's ``DimSize`` x ``ElementType`` as "No
such file or directory", and allocates whatever ``DimSize`` claims before it reads a byte.
Reading the header text first gives a one-line error that says what is wrong, and refuses a
truncated file (or a header claiming more voxels than the file holds) without allocating.
Compressed payloads (``CompressedData = True``) cannot be sized from the header; SimpleITK
checks those. A header without ``ElementSpacing`` (or ``ElementSize``, which MetaIO takes in
its place) gets 1 mm voxels from SimpleITK without a word: the voxel size is unknown, and
the file is refused as a NIfTI without one is, instead of measured in made-up millimetres.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..utils.errors import LumbarError

ELEMENT_BYTES = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2,
                 "MET_UINT": 4, "MET_INT": 4, "MET_ULONG": 8, "MET_LONG": 8,
                 "MET_ULONG_LONG": 8, "MET_LONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
MAX_HEADER_BYTES = 1 << 16  # a MetaImage header is a few hundred bytes of text
MAX_NDIMS = 10  # SimpleITK's own limit is far above what a volume needs


def read_header(path: Path) -> Dict[str, str]:
    """The ``key = value`` lines of a MetaImage header, up to ``ElementDataFile``, with the
    byte offset of the data after it (``_data_offset``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_HEADER_BYTES)
    except OSError as e:
        raise LumbarError(f"{path}: cannot read ({e.strerror}); check the file") from None
    fields: Dict[str, str] = {}
    offset = 0
    for raw in head.split(b"\n"):
        offset += len(raw) + 1
        key, _, value = raw.decode("latin-1").partition("=")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            fields["_data_offset"] = str(offset)
            break
    return fields


def payload_problem(path: Path) -> Optional[str]:
    """Why the voxel data of a MetaImage file is shorter than its header says, or None
    (also None when the header cannot be sized: SimpleITK then reports it)."""
    fields = read_header(path)
    try:
        dims = [int(v) for v in fields.get("DimSize", "").split()]
        n_comp = int(fields.get("ElementNumberOfChannels", "1") or 1)
    except ValueError:
        return None
    element = ELEMENT_BYTES.get(fields.get("ElementType", ""))
    data_name = fields.get("ElementDataFile", "")
    if (not dims or element is None or "_data_offset" not in fields or data_name == "LIST"
            or fields.get("CompressedData", "False").lower() == "true"):
        return None
    if min(dims) < 1 or n_comp < 1:
        return f"DimSize {fields['DimSize']} has a size below 1; fix the header"
    expected = int(np.prod(dims, dtype=np.float64)) * n_comp * element
    if data_name == "LOCAL":
        actual = path.stat().st_size - int(fields["_data_offset"])
    else:
        data = path.parent / data_name
        if not data.is_file():
            return f"its data file {data} is missing; put it beside the header"
        actual = data.stat().st_size
    if actual < expected:
        return (f"truncated: the header's DimSize x ElementType imply {expected} bytes of "
                f"voxels, the file holds {actual}; re-export it")
    return None


def header_problem(path: Path) -> Optional[str]:
    """Why the header's dimensions or voxel size are unusable, or None. SimpleITK aborts the
    process (no exception) on some dimensions, e.g. ``NDims = -1`` (found by the fuzzer)."""
    fields = read_header(path)
    ndims, dims = fields.get("NDims", ""), fields.get("DimSize", "").split()
    if "NDims" not in fields:
        return "cannot read volume (no MetaImage header: NDims is missing); check the file"
    if not ndims.isdigit() or not 1 <= int(ndims) <= MAX_NDIMS:
        return f"NDims {ndims!r} is not a dimension count (1..{MAX_NDIMS}); fix the header"
    if len(dims) != int(ndims) or not all(d.isdigit() for d in dims):
        return (f"DimSize {fields.get('DimSize', '')!r} does not give {ndims} sizes; fix the "
                "header")
    return spacing_problem(fields, int(ndims))


def spacing_problem(fields: Dict[str, str], ndims: int) -> Optional[str]:
    """Why the header gives no voxel size (``ElementSpacing``, else ``ElementSize``), or None.

    Without one SimpleITK assumes 1 mm; a zero, negative or non-finite one it rejects with a
    cryptic message or silently makes positive.
    """
    key = "ElementSpacing" if "ElementSpacing" in fields else "ElementSize"
    if key not in fields:
        return ("no ElementSpacing: the voxel size is unknown (SimpleITK would assume 1 mm); "
                f"add `ElementSpacing = <{ndims} sizes in mm>` to the header")
    try:
        sizes = [float(v) for v in fields[key].split()]
    except ValueError:
        sizes = []
    if len(sizes) != ndims or not all(math.isfinite(v) and v > 0 for v in sizes):
        return (f"{key} {fields[key]!r} is not {ndims} positive voxel sizes in mm; fix the "
                "header")
    return None


def check_metaimage(path: Path) -> None:
    """Refuse a MetaImage file whose header dimensions or voxel size are unusable or unknown,
    or whose voxel data is shorter than its header says."""
    problem = header_problem(path) or payload_problem(path)
    if problem:
        raise LumbarError(f"{path}: {problem}")


__all__ = ["check_metaimage", "header_problem", "payload_problem", "read_header",
           "spacing_problem"]
