"""SAM-Med3D's cost: the encoder on one crop, a decoder call per click, and sliding windows.

Builds the ``turbo`` spec (ViT-B 3D, the released architecture; random weights: the cost
does not depend on them) or ``tiny``, and on a synthetic CT-like volume with one object
longer than one crop (an ellipsoid of ``--length-mm`` along x, at 1.5 mm more than the
crop's 128 voxels = 192 mm for turbo) times, in the same run:

- the encoder on one crop (``CropSession``), and one decoder call;
- the interactive run of the object with ``--clicks`` clicks in one crop (the baseline)
  and with ``windows`` on (the final mask from sliding crops over the object's box);

and prints the seconds, the crops run and the ratio windows / one crop.

    .venv/bin/python benchmarks/bench_sam3d.py [--spec turbo|tiny] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from medsegflow.io import Geometry, Volume
from medsegflow.sam3d.infer import segment_labels
from medsegflow.sam3d.model import build_sam3d
from medsegflow.sam3d.preprocess import crop_box, prepare_crop, to_model_grid
from medsegflow.sam3d.session import CropSession


def long_case(length_mm: float, spacing=(3.0, 1.5, 1.5)) -> tuple[Volume, Volume]:
    """A (Z, Y, X) volume with one ellipsoid ``length_mm`` long along x."""
    shape = (40, 120, int(length_mm / spacing[2]) + 40)
    zz, yy, xx = np.indices(shape, dtype=np.float64)
    centre = np.asarray(shape) / 2.0
    radii = np.array([40.0 / spacing[0], 50.0 / spacing[1], length_mm / 2 / spacing[2]])
    inside = (((np.stack([zz, yy, xx], -1) - centre) / radii) ** 2).sum(-1) <= 1.0
    rng = np.random.default_rng(0)
    image = (rng.normal(0, 20, shape) + 60 * inside - 100).astype(np.float32)
    geometry = Geometry(spacing_xyz=spacing[::-1])
    return Volume(image, geometry), Volume(inside.astype(np.uint8), geometry)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", choices=("turbo", "tiny"), default="turbo")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--length-mm", type=float, default=300.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_sam3d(args.spec, device="cpu").eval()
    size = int(model.image_encoder.img_size)
    image, label = long_case(args.length_mm)
    grid = to_model_grid(image, label=label)
    crop = prepare_crop(grid, crop_box(np.asarray(grid.shape) // 2, size))
    CropSession(model, crop, device="cpu")  # warm-up
    start = time.perf_counter()
    session = CropSession(model, crop, device="cpu")
    encode_s = time.perf_counter() - start
    centre = np.full((1, 3), size / 2.0)
    start = time.perf_counter()
    session.decode(centre, np.ones(1, np.int64), session.empty_logits())
    decode_s = time.perf_counter() - start
    print(f"{args.spec}: crop {size}^3, {args.threads} thread(s)")
    print(f"encoder {encode_s:.2f} s per crop, decoder {decode_s:.3f} s per click")
    kwargs = {"n_clicks": args.clicks, "mode": "center", "device": "cpu"}
    start = time.perf_counter()
    single, _ = segment_labels(model, image, label, **kwargs)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    windowed, results = segment_labels(model, image, label, window_overlap=0.25, **kwargs)
    windowed_s = time.perf_counter() - start
    run = results[1].windows
    n_run = run.n_run if run is not None else 0
    print(
        f"object {args.length_mm:.0f} mm long ({grid.shape} voxels at 1.5 mm), "
        f"{args.clicks} clicks: one crop {single_s:.2f} s, with windows {windowed_s:.2f} s "
        f"({n_run} crops run for the final mask)"
    )
    print(f"ratio windows / one crop: {windowed_s / single_s:.2f}")
    covered = [int(((v[-1] > 0) & (label.array_zyx > 0)).sum()) for v in (single, windowed)]
    print(
        f"object voxels covered: {covered[0]} one crop, {covered[1]} windows, "
        f"of {int(label.array_zyx.sum())}"
    )


if __name__ == "__main__":
    main()
