"""Train the demo CLIP, or fine-tune a downloaded one, on image-caption pairs with DHN-NCE.

MedCLIP-SAMv2's first stage: every tower of the CLIP is trained with AdamW on the
:func:`~medsegflow.clip.dhn_nce.dhn_nce_loss` of batches of (image, caption) pairs from
``captions.csv`` (:mod:`medsegflow.clip.captions`). Pairs with identical captions are not
treated as negatives of each other (``groups`` of the loss). Each epoch visits every pair
once in random order; with ``balance``, it instead draws as many pairs as the table
holds, a dataset uniformly at random and then one of its pairs, so that a small 2D dataset
is not drowned by the slices of a 3D one (at the price of easy cross-dataset negatives
filling half of every batch). Images are flipped left-right with probability 0.5 and
zoomed (a random crop of 80-100 % of the side), then resized to the model's input without
cropping (:meth:`ClipBundle.image_tensor`). The learning rate warms up linearly over the
first 5 % of the steps, then decays to 0 (cosine).

Runs on the CPU are deterministic given ``seed`` and ``threads``. The result is written atomically
in the open_clip folder layout (:func:`~medsegflow.clip.demo.write_clip_folder`) with
``train_log.csv`` (``epoch, loss, lr, seconds``, loss = mean over the epoch's batches).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from medsegflow.clip.bundle import ClipBundle
from medsegflow.clip.demo import build_demo_clip, write_clip_folder
from medsegflow.clip.dhn_nce import dhn_nce_loss
from medsegflow.errors import ConfigError, InputError
from medsegflow.io import read_raster
from medsegflow.schema import complete
from medsegflow.threads import limit_threads
from medsegflow.training.schedule import lr_factor

log = logging.getLogger(__name__)

HISTORY_FILE = "train_log.csv"
TRAIN_SCHEMA = "config.schema.yaml#/$defs/clip_train"
"""Training the demo CLIP from scratch (``clip_models.<demo>.train``): its keys and defaults."""
FINETUNE_SCHEMA = "config.schema.yaml#/$defs/clip_finetune"
"""Fine-tuning downloaded weights (``clip_models.<name>.finetune``): DHN-NCE with
MedCLIP-SAMv2's loss settings; a small learning rate keeps the pretrained features."""
CAPTION_KEYS = (
    "datasets",
    "splits",
    "crops_per_image",
    "crop_fraction",
    "phantom_images",
    "lesion_free",
)
"""Keys of the same config block used by the caption stage, not by training."""
ARCH_KEYS = ("image_size", "vision_pool")
"""Keys of the block that shape the demo CLIP (there is none when fine-tuning: the input
size of a downloaded model is fixed by its weights)."""


def training_block(spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The training block of ``clip_models.<name>`` completed by its schema: ``train:``
    for the demo arch (trained from scratch), else ``finetune:`` (:class:`ConfigError`
    naming it when there is none)."""
    if spec.get("arch") == "demo":
        return complete(spec.get("train") or {}, TRAIN_SCHEMA, key=f"clip_models.{name}.train")
    if spec.get("finetune") is None:
        raise ConfigError(f"clip_models.{name}: nothing to train (no finetune: block)")
    return complete(spec["finetune"], FINETUNE_SCHEMA, key=f"clip_models.{name}.finetune")


def training_settings(block: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`finetune_clip` in a complete training block."""
    return {k: v for k, v in block.items() if k not in (*CAPTION_KEYS, *ARCH_KEYS)}


def read_caption_table(captions_csv: str | os.PathLike) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The pairs of ``captions.csv`` and their uint8 images (paths relative to the CSV)."""
    path = Path(captions_csv)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("image", "caption") if c not in table.columns]
    if missing or table.empty:
        raise InputError(f"{path}: needs columns image, caption and at least one row")
    images = []
    for name in table["image"]:
        array = read_raster(path.parent / name)
        if array.dtype != np.uint8:
            raise InputError(f"{path.parent / name}: expected an 8-bit image, got {array.dtype}")
        images.append(array[..., :3] if array.ndim == 3 else array)
    return table, images


def _augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        image = image[:, ::-1]
    height, width = image.shape[:2]
    scale = rng.uniform(0.8, 1.0)
    h, w = max(1, round(scale * height)), max(1, round(scale * width))
    y0, x0 = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
    return np.ascontiguousarray(image[y0 : y0 + h, x0 : x0 + w])


def epoch_order(datasets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one epoch: ``len(datasets)`` draws, each a dataset uniformly at
    random, then one of its rows uniformly at random."""
    names = sorted(set(datasets.tolist()))
    members = [np.flatnonzero(datasets == n) for n in names]
    picks = rng.integers(len(names), size=len(datasets))
    return np.array([members[p][rng.integers(len(members[p]))] for p in picks], dtype=np.int64)


def _run_epoch(
    bundle: ClipBundle,
    optimizer: Any,
    schedule: Any,
    *,
    batches: list[np.ndarray],
    images: list[np.ndarray],
    tokens: Any,
    caption_id: np.ndarray,
    loss_settings: Mapping[str, float],
    rng: np.random.Generator,
) -> float:
    """One pass over ``batches`` (row indices); returns the mean loss."""
    import torch

    model = bundle.model
    device = next(model.parameters()).device
    losses = []
    for rows in batches:
        pixels = bundle.image_tensor([_augment(images[r], rng) for r in rows]).to(device)
        ids = torch.as_tensor(caption_id[rows])
        loss = dhn_nce_loss(
            model.encode_image(pixels),
            model.encode_text(tokens[ids].to(device)),
            groups=ids.to(device),
            **loss_settings,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def finetune_clip(
    *,
    bundle: ClipBundle,
    captions_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    epochs: int,
    batch_size: int,
    lr: float,
    temperature: float,
    alpha: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    balance: bool,
    seed: int,
    threads: int,
) -> pd.DataFrame:
    """Train every parameter of ``bundle.model`` (on its device) on ``captions_csv``
    (module docstring) and save it to ``out_dir``; returns the per-epoch history
    (``train_log.csv``). Deterministic given ``seed`` and ``threads`` on the CPU."""
    import torch

    if epochs < 1 or batch_size < 2:
        raise ConfigError(f"epochs {epochs} must be >= 1 and batch_size {batch_size} >= 2")
    limit_threads(int(threads))
    torch.manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))
    table, images = read_caption_table(captions_csv)
    captions = sorted(set(table["caption"]))
    caption_id = table["caption"].map({c: i for i, c in enumerate(captions)}).to_numpy()
    datasets = table["dataset"].to_numpy() if "dataset" in table else np.zeros(len(table), str)
    optimizer = torch.optim.AdamW(
        bundle.model.train().parameters(), lr=float(lr), weight_decay=weight_decay
    )
    n_batches = max(1, len(table) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_factor(i, int(epochs) * n_batches)
    )
    settings = {"temperature": temperature, "alpha": alpha, "beta1": beta1, "beta2": beta2}
    log.info(
        "%s: %d pairs, %d distinct captions, %d epochs x %d batches of %d, lr %g, %s",
        *(bundle.name, len(table), len(captions), epochs, n_batches, batch_size, lr, settings),
    )
    tokens = bundle.tokenizer(captions)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(1, int(epochs) + 1), desc=f"train {bundle.name}", unit="epoch")
    for epoch in bar:
        order = epoch_order(datasets, rng) if balance else rng.permutation(len(table))
        loss = _run_epoch(
            bundle,
            optimizer,
            schedule,
            batches=[order[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)],
            images=images,
            tokens=tokens,
            caption_id=caption_id,
            loss_settings=settings,
            rng=rng,
        )
        lr_now = float(optimizer.param_groups[0]["lr"])
        seconds = round(time.perf_counter() - start, 3)
        history.append({"epoch": epoch, "loss": loss, "lr": lr_now, "seconds": seconds})
        bar.set_postfix(loss=f"{loss:.4f}")
        log.info("epoch %d/%d: loss %.4f", epoch, epochs, loss)
    bundle.model.eval()
    table_out = pd.DataFrame(history, columns=["epoch", "loss", "lr", "seconds"])
    write_clip_folder(bundle, out_dir, extra_files={HISTORY_FILE: table_out.to_csv(index=False)})
    log.info("saved %s (%.1f s)", out_dir, time.perf_counter() - start)
    return table_out


def caption_words(captions_csv: str | os.PathLike) -> list[str]:
    """The captions of ``captions.csv`` (for the demo vocabulary)."""
    path = Path(captions_csv)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    return sorted(set(pd.read_csv(path, dtype=str, keep_default_na=False)["caption"]))


def train_demo_clip(
    *,
    captions_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    train: Mapping[str, Any],
    words: Iterable[str] = (),
    seed: int,
    arch: Mapping[str, int] | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Build the demo CLIP (:func:`~medsegflow.clip.demo.build_demo_clip`, vocabulary from
    the captions and ``words``, e.g. the text prompts) and train it on ``captions_csv``.

    Args:
        train: the complete ``clip_models.<name>.train`` block (:func:`training_block`).
        arch: overrides of :data:`~medsegflow.clip.demo.DEMO_ARCH` (over the block's
            ``image_size`` and ``vision_pool``).
    """
    shape = {k: train[k] for k in ARCH_KEYS}
    vocabulary = [*caption_words(captions_csv), *words]
    bundle = build_demo_clip(words=vocabulary, seed=int(seed), **{**shape, **dict(arch or {})})
    bundle.model.to(device)
    return finetune_clip(
        bundle=bundle,
        captions_csv=captions_csv,
        out_dir=out_dir,
        seed=seed,
        **training_settings(train),
    )


def train_clip_model(
    *,
    spec: Mapping[str, Any],
    name: str,
    weights: Mapping[str, str | os.PathLike],
    captions_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int,
    words: Iterable[str] = (),
    threads: int | None = None,
    device: str | None = "cpu",
) -> pd.DataFrame:
    """The training job of ``clip_models.<name>``: the demo arch is trained from scratch
    (``train:`` block, vocabulary from the captions and ``words``); a downloaded model with
    a ``finetune:`` block is loaded from its base weights and fine-tuned. ``threads`` (the
    job's) overrides the block's; ``device`` None or ``"auto"`` trains on CUDA when
    available (runs are bit-for-bit repeatable on the CPU only)."""
    from medsegflow.clip.backends import load_clip
    from medsegflow.models.sam_loader import select_device

    device = str(select_device(device))

    block = training_block(spec, name)
    if threads is not None:
        block["threads"] = int(threads)
    if spec.get("arch") == "demo":
        return train_demo_clip(
            captions_csv=captions_csv,
            out_dir=out_dir,
            train=block,
            words=words,
            seed=seed,
            device=device,
        )
    settings = training_settings(block)
    bundle = load_clip(spec, name=name, weights=weights, base=True, device=device)
    return finetune_clip(
        bundle=bundle, captions_csv=captions_csv, out_dir=out_dir, seed=seed, **settings
    )
