"""Benchmark the SAM embedding cache against re-encoding the image for every prompt.

A ViT-B SAM (official architecture, input 1024, random weights: no download) segments
``--images`` random grey images of ``--height`` x ``--width`` pixels with ``--variants``
prompt variants each (alternately a jittered box and a positive + negative point pair):

- naive path, as the original per-prompt scripts do: ``SamPredictor.set_image`` and then
  ``predict`` for every variant, so the image encoder runs once per variant;
- cached path, as MedSegFlow does: each image is encoded once
  (:func:`medsegflow.models.sam_encode.encode_slices`, stored float16 like the cache),
  then the prompt encoder and mask decoder run for all variants in two batched calls.

It logs both wall times, their ratio (which approaches the number of variants, because
the encoder dominates), the encoder's images/s and the decoder's time per prompt, and
checks that both paths give the same masks (up to the float16 storage). Exit status 1
when fewer than ``--min-agreement`` of the mask pixels agree.

Run from the repository root (about 2 minutes with the defaults on 2 CPU cores)::

    .venv/bin/python benchmarks/bench_sam_cache.py [--variants 6] [--images 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np
import torch
from segment_anything import SamPredictor

from medsegflow.models.sam_archs import build_sam
from medsegflow.models.sam_encode import encode_slices

LOG = logging.getLogger("bench_sam_cache")


def make_prompts(n: int, *, height: int, width: int, rng: np.random.Generator) -> list[dict]:
    """``n`` prompt variants around the image centre, in pixel coordinates (x = column):
    even ones a jittered ``XYXY`` box, odd ones a positive and a negative point."""
    cy, cx = height / 2, width / 2
    variants = []
    for i in range(n):
        if i % 2 == 0:
            box = np.array([cx - 80, cy - 60, cx + 80, cy + 60]) + rng.integers(-10, 11, 4)
            variants.append({"box": box.astype(np.float64)})
        else:
            points = np.array([[cx, cy], [cx - 150, cy - 120]]) + rng.integers(-10, 11, (2, 2))
            variants.append({"point_coords": points.astype(np.float64), "point_labels": [1, 0]})
    return variants


def naive(model, image_yx: np.ndarray, variants: list[dict]) -> list[np.ndarray]:
    """Encode the image again for every variant, as per-prompt scripts do."""
    predictor = SamPredictor(model)
    masks = []
    for variant in variants:
        predictor.set_image(np.repeat(image_yx[:, :, None], 3, axis=2))
        kwargs = dict(variant)
        if "point_labels" in kwargs:
            kwargs["point_labels"] = np.asarray(kwargs["point_labels"])
        out, _, _ = predictor.predict(**kwargs, multimask_output=True)
        masks.append(out)
    return masks


def decode_cached(model, embedding: torch.Tensor, variants: list[dict], shape_yx) -> list:
    """Prompt encoder + mask decoder only, batched per prompt kind; masks in input order."""
    recipe = model.input_recipe
    input_size = recipe.input_size(shape_yx)
    out: dict[int, np.ndarray] = {}
    boxes = [i for i, v in enumerate(variants) if "box" in v]
    points = [i for i, v in enumerate(variants) if "point_coords" in v]
    for group in (boxes, points):
        if not group:
            continue
        if group is boxes:
            xyxy = np.stack(
                [recipe.map_boxes(variants[i]["box"][None], shape_yx)[0] for i in group]
            )
            prompt = {"points": None, "boxes": torch.as_tensor(xyxy, dtype=torch.float32)}
        else:
            xy = np.stack([recipe.map_points(variants[i]["point_coords"], shape_yx) for i in group])
            labels = torch.as_tensor([variants[i]["point_labels"] for i in group])
            prompt = {"points": (torch.as_tensor(xy, dtype=torch.float32), labels), "boxes": None}
        sparse, dense = model.prompt_encoder(masks=None, **prompt)
        low_res, _ = model.mask_decoder(
            embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True
        )
        masks = model.postprocess_masks(low_res, input_size, shape_yx) > model.mask_threshold
        for row, i in enumerate(group):
            out[i] = masks[row].numpy()
    return [out[i] for i in range(len(variants))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", type=int, default=6, help="prompt variants per image")
    parser.add_argument("--images", type=int, default=1, help="number of random images")
    parser.add_argument("--height", type=int, default=400)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--min-agreement", type=float, default=0.99)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_sam("vit_b")
    images = rng.integers(0, 256, (args.images, args.height, args.width), dtype=np.uint8)
    variants = [
        make_prompts(args.variants, height=args.height, width=args.width, rng=rng) for _ in images
    ]
    LOG.info(
        "ViT-B SAM (random weights, input 1024), %d image(s) of %dx%d, %d variants each, "
        "%d threads",
        args.images,
        args.height,
        args.width,
        args.variants,
        args.threads,
    )

    with torch.inference_mode():
        start = time.perf_counter()
        slow = [naive(model, img, v) for img, v in zip(images, variants, strict=True)]
        naive_s = time.perf_counter() - start

        start = time.perf_counter()
        embeddings = encode_slices(images, model=model, device=torch.device("cpu"), batch_size=1)
        encode_s = time.perf_counter() - start
        fast = [
            decode_cached(model, torch.as_tensor(emb[None]).float(), v, img.shape)
            for emb, img, v in zip(embeddings, images, variants, strict=True)
        ]
        cached_s = time.perf_counter() - start
    decode_s = cached_s - encode_s

    pairs = [(a, b) for s, f in zip(slow, fast, strict=True) for a, b in zip(s, f, strict=True)]
    agreement = float(np.mean([np.mean(a == b) for a, b in pairs]))
    n_prompts = args.images * args.variants
    LOG.info("naive  (set_image + predict per variant): %8.1f s", naive_s)
    LOG.info("cached (encode once, batched decoding):   %8.1f s", cached_s)
    LOG.info("speed-up: %.2fx (variants per image: %d)", naive_s / cached_s, args.variants)
    LOG.info(
        "image encoder: %.3f images/s (%.1f s per image)",
        args.images / encode_s,
        encode_s / args.images,
    )
    LOG.info("cached decoding: %.1f ms per prompt", 1000 * decode_s / n_prompts)
    LOG.info("mask pixels equal on both paths: %.4f", agreement)
    return 0 if agreement >= args.min_agreement else 1


if __name__ == "__main__":
    sys.exit(main())
