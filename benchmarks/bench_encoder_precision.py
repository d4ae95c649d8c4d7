"""LiteMedSAM's image encoder on the CPU: float32 against bf16 autocast, speed and DSC.

On the real 2D fixtures of ``../shared/data`` (6 BUSI ultrasound images, 2 chest X-rays)
each image goes through LiteMedSAM's official recipe and encoder twice, in float32 (the
baseline, measured in the same run) and in bf16 autocast (``precision: bf16``), and is
decoded from tight ground-truth boxes (one per connected component) by the same code as
the pipeline. Prints the seconds per image of each, their ratio, each image's DSC, and
what ``precision: auto`` chooses on this machine (:mod:`medsegflow.precision`: bf16 on
CUDA or on a CPU with native bf16, float32 otherwise) with the CPU's bf16 flags.

Under bf16 the pipeline's encoder has its batch norms folded into its convolutions
(:func:`medsegflow.models.sam_encode.inference_encoder`; float32 runs the encoder as loaded,
as the official code). bf16 is timed both ways, and the ratio folded / as loaded printed.
Last, 4 slices are encoded one per call and in one call of 4, in the precision ``auto``
chose: the ratio behind ``embed_batch_size: auto`` (1 slice per call on the CPU).

    .venv/bin/python benchmarks/bench_encoder_precision.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from medsegflow.models.sam_encode import inference_encoder, model_input
from medsegflow.models.sam_loader import autocast, load_sam_model
from medsegflow.models.sam_registry import packaged_weights_path
from medsegflow.precision import (
    CPU_BF16_FLAGS,
    CPUINFO,
    cpuinfo_flags,
    encoder_batch_size,
    resolve_precision,
)
from medsegflow.promptable.interface import Prompt2D
from medsegflow.promptable.sam_model import decode_prompts
from medsegflow.prompts.boxes import box_from_mask

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def fixtures() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, grey uint8 image, bool reference) of the BUSI and X-ray fixtures."""
    out = []
    for image in sorted((DATA / "busi_mini" / "images").glob("*.png")):
        mask = DATA / "busi_mini" / "masks" / image.name
        out.append((f"busi {image.stem}", image, mask))
    for i in (1, 2):
        out.append(
            (f"cxr {i}", DATA / "cxr_lung" / f"{i}.jpg", DATA / "cxr_lung" / f"{i}-mask.png")
        )
    return [
        (name, np.asarray(Image.open(i).convert("L")), np.asarray(Image.open(m).convert("L")) > 0)
        for name, i, m in out
    ]


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    return float(2 * (prediction & reference).sum() / (prediction.sum() + reference.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_sam_model(
        packaged_weights_path("lite_medsam"), arch="lite_medsam", device="cpu"
    )
    encoder = inference_encoder(model.image_encoder)
    seconds = {"fp32": 0.0, "bf16": 0.0}
    unfolded = 0.0  # bf16 with the encoder as loaded
    scores = {"fp32": [], "bf16": []}
    cases = fixtures()
    with torch.inference_mode():
        encoder(model_input([cases[0][1]], model=model, device="cpu"))  # warm-up
        for name, image, reference in cases:
            batch = model_input([image], model=model, device="cpu")
            parts, n = ndimage.label(reference)
            boxes = [box_from_mask(parts == k + 1).astype(np.float64) for k in range(n)]
            prompts = [Prompt2D(box, np.zeros((0, 3))) for box in boxes]
            row = []
            for precision in ("fp32", "bf16"):
                start = time.perf_counter()
                with autocast("cpu", precision):
                    embedding = (encoder if precision == "bf16" else model.image_encoder)(batch)
                seconds[precision] += time.perf_counter() - start
                if precision == "bf16":
                    start = time.perf_counter()
                    with autocast("cpu", precision):
                        model.image_encoder(batch)
                    unfolded += time.perf_counter() - start
                embedding = embedding.float().numpy().astype(np.float16)[0]
                decoded = decode_prompts(
                    model,
                    embedding,
                    prompts,
                    original_size=image.shape,
                    input_size=model.input_recipe.input_size(image.shape),
                    multimask=False,
                )
                scores[precision].append(dice(decoded.masks_pyx.any(axis=0), reference))
                row.append(f"{precision} {scores[precision][-1]:.4f}")
            print(f"{name:12s} DSC {', '.join(row)}")
    per = {k: v / len(cases) for k, v in seconds.items()}
    print(
        f"encoder, {args.threads} thread(s): fp32 {per['fp32']:.3f} s/image (baseline), "
        f"bf16 {per['bf16']:.3f} s/image, ratio bf16/fp32 {per['bf16'] / per['fp32']:.2f}"
    )
    print(
        f"bf16: folded {per['bf16']:.3f} s/image, as loaded {unfolded / len(cases):.3f}; "
        f"ratio folded / as loaded {seconds['bf16'] / unfolded:.2f}"
    )
    diff = np.abs(np.array(scores["bf16"]) - np.array(scores["fp32"]))
    print(
        f"mean DSC fp32 {np.mean(scores['fp32']):.4f}, bf16 {np.mean(scores['bf16']):.4f}; "
        f"largest difference {diff.max():.4f}"
    )
    try:
        flags = sorted(cpuinfo_flags(CPUINFO.read_text(encoding="utf-8")) & CPU_BF16_FLAGS)
    except OSError:
        flags = []
    chosen = resolve_precision("auto", "cpu")
    faster = "bf16" if per["bf16"] < per["fp32"] else "fp32"
    print(
        f"precision: auto chooses {chosen} on this CPU (native bf16 flags: "
        f"{', '.join(flags) or 'none'}); measured faster here: {faster} "
        f"(ratio bf16/fp32 {per['bf16'] / per['fp32']:.2f})"
    )
    batch_sizes(model, cases, chosen)


def batch_sizes(model, cases, precision: str) -> None:
    """Seconds per slice in batches of 4 against one slice per call (the baseline), in the
    precision ``auto`` chose, with the pipeline's encoder: what ``embed_batch_size: auto``
    decides on by device (:func:`medsegflow.precision.encoder_batch_size`)."""
    images = [image for _, image, _ in cases[:4]]
    batch = model_input(images, model=model, device="cpu")
    with torch.inference_mode(), autocast("cpu", precision):
        encoder = inference_encoder(model.image_encoder) if precision != "fp32" else None
        encoder = encoder or model.image_encoder
        encoder(batch[:1])  # warm-up
        start = time.perf_counter()
        for k in range(len(images)):
            encoder(batch[k : k + 1])
        single = (time.perf_counter() - start) / len(images)
        start = time.perf_counter()
        encoder(batch)
        batched = (time.perf_counter() - start) / len(images)
    print(
        f"{precision}, {len(images)} slices: 1 per call {single:.3f} s/slice (baseline), "
        f"{len(images)} per call {batched:.3f} s/slice, ratio {batched / single:.2f}; "
        f"embed_batch_size auto on the CPU: {encoder_batch_size('auto', 'cpu')}"
    )


if __name__ == "__main__":
    main()
