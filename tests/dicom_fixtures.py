"""Writing a DICOM series from a SimpleITK volume, for the reader and adapter tests."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk


def write_dicom_series(
    image: sitk.Image, folder: Path, uid: str = "1.2.826.0.1.3680043.2.1", *, prefix: str = "slice"
) -> None:
    """One 2D DICOM file per slice (``{prefix}{k:04d}.dcm``), with the position, orientation
    and spacing tags the series reader sorts and places the slices by."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    for k in range(image.GetDepth()):
        slc = sitk.Cast(image[:, :, k], sitk.sitkInt16)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0020|000d": uid + ".1",
            "0020|000e": uid + ".2",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[0:7:3], *direction[1:8:3])),
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        for tag, value in tags.items():
            slc.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:04d}.dcm"))
        writer.Execute(slc)
