"""How steadily the demo CLIP localises its target over training seeds.

For each seed, trains a demo CLIP (``arch: demo``) of a config from scratch as the
pipeline's ``finetune_clip`` job does (:func:`medsegflow.clip.finetune.train_demo_clip`),
on the caption pairs of ``phantom_images`` extra generated phantoms of the dataset
(:func:`medsegflow.clip.captions.phantom_pairs`, with the block's crops and lesion-free
twins; the pipeline adds the dataset's train split to these). Then scores a text method's
saliency (M2IB, its ``saliency:`` block and text prompt set) on ``--eval-images`` further
phantoms that no seed trained on:

- ``auc``: mean pixel ROC AUC of the maps against the lesion (0.5 is chance), and the
  worst image's (``auc_min``);
- ``peak_in``: share of images whose saliency maximum lies on the lesion;
- ``coarse_dsc``: DSC of the method's coarse mask (``coarse:`` block);
- ``box_iou``: IoU of the coarse mask's box with the lesion's box (the SAM prompt).

One row per seed and vision block (``--layers``, default the method's ``vlayer``), then
the share of seeds whose AUC reaches ``--auc-goal``. About 70 s per seed on one thread.
The seeds' training histories (``train_log.csv``) stay in ``--keep`` if given.

    .venv/bin/python benchmarks/clip_seed_sweep.py [--seeds 20261121 7 1 2]
        [--method medclip_sam] [--layers 3,4,5] [--set epochs=16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medsegflow.clip.backends import load_clip
from medsegflow.clip.captions import phantom_pairs, write_caption_pairs
from medsegflow.clip.finetune import train_demo_clip, training_block
from medsegflow.coarse.postprocess import coarse_mask, parse_coarse_config
from medsegflow.config import load_config, read_config_file
from medsegflow.datasets.phantom import extra_cases
from medsegflow.methods.sam_auto import box_iou
from medsegflow.preprocess.intensity import normalise_intensity
from medsegflow.prompts.boxes import box_from_mask
from medsegflow.saliency.localisation import pixel_auc
from medsegflow.saliency.m2ib import M2IBParams, image_saliency
from medsegflow.text_prompts import resolve_texts
from medsegflow.threads import limit_threads


def mask_box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the bounding boxes of two masks (0 when either is empty)."""
    if not a.any() or not b.any():
        return 0.0
    return float(box_iou(box_from_mask(a), box_from_mask(b)[None])[0])


def eval_images(dataset_spec: dict, *, seed: int, n: int, prompt_set: dict, key: str) -> list:
    """(image uint8, lesion bool, sentences) of ``n`` phantoms of their own ids."""
    out = []
    for source in extra_cases(dataset_spec.get("params") or {}, seed=seed, n=n, prefix="sweep"):
        case = source.load()
        image = normalise_intensity(
            case.image.array_zyx, modality=case.modality, window=dataset_spec.get("window")
        )[0]
        label = case.label.array_zyx[0]
        texts = resolve_texts(
            prompt_set,
            cases=[{"case_id": case.case_id, "caption": case.caption}],
            label_map={"background": 0, "lesion": 1},
            key=key,
        )[case.case_id]
        for value, sentences in texts.items():
            out.append((image, label == value, sentences))
    return out


def score_seed(bundle, images: list, method: dict, layers: list[int], key: str) -> list[dict]:
    """The module docstring's scores of one trained CLIP, per vision block."""
    coarse = parse_coarse_config(method.get("coarse"), f"{key}.coarse")
    rows = []
    for layer in layers:
        params = M2IBParams.from_config(
            {**(method.get("saliency") or {}), "vlayer": layer}, key_prefix=f"{key}.saliency"
        )
        aucs, peaks, dscs, ious = [], [], [], []
        for image, target, sentences in images:
            saliency = image_saliency(bundle, image, sentences, params, seed=0)
            mask = coarse_mask(saliency, image, coarse)
            aucs.append(pixel_auc(saliency, target))
            peaks.append(bool(target.flat[int(np.argmax(saliency))]))
            dscs.append(2 * (mask & target).sum() / max(1, mask.sum() + target.sum()))
            ious.append(mask_box_iou(mask, target))
        rows.append(
            {
                "layer": layer,
                "auc": np.mean(aucs),
                "auc_min": np.min(aucs),
                "peak_in": np.mean(peaks),
                "coarse_dsc": np.mean(dscs),
                "box_iou": np.mean(ious),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("--method", default="medclip_sam", help="a text_sam method")
    parser.add_argument("--dataset", default="phantom_us")
    parser.add_argument("--seeds", type=int, nargs="+", default=[20261121, 7, 1, 2])
    parser.add_argument("--layers", help="vision blocks, e.g. 3,4,5 (default: the method's)")
    parser.add_argument("--eval-images", type=int, default=16)
    parser.add_argument("--set", action="append", default=[], help="train.KEY=JSON override")
    parser.add_argument("--auc-goal", type=float, default=0.85)
    parser.add_argument("--keep", type=Path, help="folder to keep each seed's model in")
    args = parser.parse_args(argv)
    limit_threads(1)
    config = load_config(read_config_file(args.config))
    key = f"methods.{args.method}"
    method = config["methods"][args.method]
    clip_name = method["clip"]
    spec = dict(config["clip_models"][clip_name])
    block = training_block(spec, clip_name)
    for item in args.set:
        name, _, value = item.partition("=")
        block[name] = json.loads(value)
    dataset_spec = config["datasets"][args.dataset]
    set_name = method["text_prompts"]
    prompt_set = dataset_spec["text_prompts"][set_name]
    layers = (
        [int(v) for v in args.layers.split(",")] if args.layers else [method["saliency"]["vlayer"]]
    )
    images = eval_images(
        dataset_spec,
        seed=int(config["seed"]),
        n=args.eval_images,
        prompt_set=prompt_set,
        key=f"datasets.{args.dataset}.text_prompts.{set_name}",
    )
    overrides = {k: block[k] for k in (s.partition("=")[0] for s in args.set)}
    print(f"{clip_name} on {args.dataset}, {len(images)} evaluation targets, overrides {overrides}")
    results = []
    for seed in args.seeds:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.keep or tmp) / f"seed_{seed}"
            rows = phantom_pairs(
                args.dataset,
                dataset_spec,
                n=int(block["phantom_images"]),
                names={1: "lesion"},
                seed=seed,
                crops_per_image=int(block["crops_per_image"]),
                crop_fraction=float(block["crop_fraction"]),
                lesion_free=bool(block.get("lesion_free", False)),
            )
            write_caption_pairs(rows, work / "captions")
            history = train_demo_clip(
                captions_csv=work / "captions" / "captions.csv",
                out_dir=work / "model",
                train=block,
                words=[s for _, _, sentences in images for s in sentences],
                seed=seed,
            )
            bundle = load_clip(
                spec, name=clip_name, weights={}, device="cpu", folder=work / "model"
            )
            for row in score_seed(bundle, images, method, layers, key):
                row = {"seed": seed, "final_loss": history["loss"].iloc[-1], **row}
                results.append(row)
                print(
                    " ".join(
                        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in row.items()
                    )
                    + f" ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    table = pd.DataFrame(results)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for layer, group in table.groupby("layer"):
        reached = int((group["auc"] >= args.auc_goal).sum())
        print(
            f"block {layer}: AUC >= {args.auc_goal} for {reached} of {len(group)} seeds; "
            f"mean AUC {group['auc'].mean():.3f}, coarse DSC {group['coarse_dsc'].mean():.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
