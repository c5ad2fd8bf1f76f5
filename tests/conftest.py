"""Shared test fixtures.

Real data lives outside the repository (its licences forbid committing it): ``<repo>/../shared/data``,
or the folder named by the environment variable ``MONAI_PATCHER_DATA``. Tests that need it take the
``shared_data`` fixture (a ``Path``) or call ``shared_path("folder", "file")``; both skip, saying why,
when the data is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The shared real-data folder (``MONAI_PATCHER_DATA`` or ``<repo>/../shared/data``); may not exist."""
    env = os.environ.get("MONAI_PATCHER_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path inside the shared data; skips the calling test when it is absent."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not available: {root} does not exist (set MONAI_PATCHER_DATA)")
    p = root.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} does not exist")
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real data; the test is skipped (with the reason) when it is absent."""
    return shared_path()


@pytest.fixture
def shared_path_fn():
    """``shared_path`` as a fixture: ``shared_path_fn("ISLES-2022-case0001", "data")``."""
    return shared_path


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """A 3-case synthetic demo dataset (written once per session); returns its datalist.json."""
    from monai_patcher.data.demo import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo"), num_cases=3, seed=0)


@pytest.fixture
def two_b_value_dwi_series(tmp_path) -> Path:
    """The real 6-slice MR series (``DICOM-MR-brain-babymri``) written twice into one series folder, like a scanner's
    DWI series: tagged ``DiffusionBValue`` 0 (pixels as they are) and 1000 (pixels halved, new SOP instance UIDs).
    Skips when the real data or pydicom is absent."""
    pydicom = pytest.importorskip("pydicom")
    src = shared_path("DICOM-MR-brain-babymri", "tests", "data")
    dst = tmp_path / "dwi_b0_b1000"
    dst.mkdir()
    for f in sorted(src.glob("*.dcm")):
        for b in (0, 1000):
            ds = pydicom.dcmread(f)
            ds.add_new(0x00189087, "FD", float(b))  # DiffusionBValue
            if b:
                ds.SOPInstanceUID = ds.SOPInstanceUID + ".1000"
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
            ds.save_as(dst / f"b{b}_{f.name}")
    return dst


def upsample_inplane(src: Path, dst: Path, size: int, slices: slice | None = None) -> Path:
    """``src`` (a NIfTI volume) resampled in-plane (axes 0 and 1, bilinear) to ``size`` x ``size``, optionally cut to
    a slab of ``slices`` along axis 2, written uncompressed to ``dst`` with the affine of the finer grid (same field
    of view: voxel ``i`` of the new grid is at ``(i + 0.5) * n / size - 0.5`` of the old one)."""
    import nibabel as nib
    import numpy as np
    import torch

    img = nib.load(str(src))
    arr = np.asanyarray(img.dataobj).astype(np.float32)
    affine = img.affine.copy()
    if slices is not None:
        arr = arr[:, :, slices]
        affine[:3, 3] += affine[:3, 2] * slices.start
    t = torch.from_numpy(arr).permute(2, 0, 1)[:, None]  # Z x 1 x X x Y
    up = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    out = up[:, 0].permute(1, 2, 0).numpy()
    scale = np.diag([arr.shape[0] / size, arr.shape[1] / size, 1.0, 1.0])
    scale[:2, 3] = (np.diag(scale)[:2] - 1) / 2
    nib.save(nib.Nifti1Image(out, affine @ scale), str(dst))
    return dst


@pytest.fixture(scope="session")
def isles22_512(tmp_path_factory) -> dict[str, Path]:
    """The real ISLES'22 case (112 x 112 x 73 at 2 mm) upsampled in-plane to a 512 x 512 scan (0.4375 mm), 24 slices
    of it (30-53, through the brain), DWI and ADC, in a temporary folder (never in the repository)."""
    data = shared_path("ISLES-2022-case0001", "data")
    out = tmp_path_factory.mktemp("isles22_512")
    return {k: upsample_inplane(data / f"sub-strokecase0001_ses-0001_{k}.nii.gz", out / f"case512_{k}.nii", 512,
                                slice(30, 54)) for k in ("dwi", "adc")}
