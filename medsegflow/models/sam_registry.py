"""Official SAM-family checkpoints: architecture, file name and where to get them.

Pure data (no torch), so the workflow can check for missing weights at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass


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
        "vit_b",
        "medsam_vit_b.pth",
        "the MedSAM checkpoint linked from the bowang-lab/MedSAM README (Google Drive)",
    ),
}
