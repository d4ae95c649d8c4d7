"""M2IB: text-driven saliency maps of a CLIP model (the saliency step of MedCLIP-SAMv2).

Multi-Modal Information Bottleneck attribution (Wang et al., NeurIPS 2023, "Visual
Explanations of Image-Text Representations via Multi-Modal Information Bottleneck
Attribution"), as MedCLIP-SAMv2 (Koleilat et al., 2024) applies it to BiomedCLIP.

**Bottleneck.** The output ``R`` (tokens x features) of block ``vlayer`` of the vision
tower is replaced by

    Z = λ ⊙ R + (1 − λ) ⊙ ε,   ε ~ N(0, vvar),   λ = sigmoid(α),

with one ``α`` per token and feature, initialised to 5 (λ ≈ 0.993: almost no noise). The
prior ``N(0, vvar)`` is M2IB's "estimator" (mean 0, variance ``var``, not statistics of the
data). The information that passes through a token-feature is the KL divergence of the
Gaussian channel, computed in the prior's normalised units (``R̃ = R / sqrt(vvar)``)::

    I = KL( N(λ R̃, (1 − λ)²) || N(0, 1) ) = ½ (λ² R̃² + (1 − λ)² − 1 − log (1 − λ)²)

``α`` alone is optimised (model frozen in eval mode, no gradient to its weights) for
``steps`` Adam steps with learning rate ``lr`` on

    loss = vbeta · mean(I) − mean_k cos(image_embedding(Z_k), text_embedding)

where ``Z_1..Z_samples`` are ``samples`` noise draws of one step (M2IB's batch of 10
copies). The **image saliency** is the information per token, ``Σ_features I`` of the
optimised ``α``, for the patch tokens (class/register tokens dropped), on the patch grid,
upsampled bilinearly to the original ``H x W`` and min-max normalised to [0, 1] (a constant
map gives zeros). The text side is the same with ``tlayer``/``tbeta``/``tvar`` on the text
tower, against the image embedding, giving one score per token.

Differences from the released code (github.com/YingWANGG/M2IB, copied into
HealthX-Lab/MedCLIP-SAMv2 ``saliency_maps/scripts/iba.py``), all deliberate:

- the released forward pass ignores the estimator: noise ``N(0, 1)`` and the KL of ``R``
  whatever ``vvar``, so ``vvar`` has no effect there; here ``vvar`` is the prior variance
  as the paper describes. ``vvar = 1`` (the default) is the released behaviour.
- the released map is the information of the last forward pass (``α`` before the last
  Adam step); here it is the information of the final ``α``.
- the released code upsamples to 224 x 224, normalises, then resizes to the image with
  nearest-neighbour interpolation; here the patch map goes bilinearly to ``H x W`` at once.
- the prefix blocks run once per step on one copy of the input; the ``samples`` noisy
  copies are made by the bottleneck itself (same result, fewer operations).

Several sentences for one image give one map each (each min-max normalised), averaged
and normalised again: each sentence is explained on its own, and a sentence that
matches the image weakly does not change the others' maps. (MedCLIP-SAMv2's
``--ensemble`` option averages the sentences' embeddings instead.)

**Defaults** (:class:`M2IBParams`) and where they come from:

- M2IB ``scripts/eval.py`` (CLIP ViT-B/32): ``vbeta 0.1, vvar 1, vlayer 9, tbeta 0.1,
  tvar 1, tlayer 9``; ``scripts/iba.py``: ``steps 10, lr 1``, batch of 10, ``α`` = 5.
- MedCLIP-SAMv2 ``saliency_maps/generate_saliency_maps.py`` (BiomedCLIP, 12 blocks):
  ``vbeta 0.1, vvar 1.0, vlayer 7, tbeta 0.3, tvar 1, tlayer 9``; its ``--hyper-opt``
  search covers ``vbeta, vvar in {0.1, 1, 2}`` and ``vlayer in {7, 8, 9}``. Only the vision
  map is used there.

Here: ``vlayer 9, vbeta 0.1, vvar 1, tlayer 9, tbeta 0.3, tvar 1, steps 10, lr 1,
samples 10``; a MedCLIP-SAMv2 replication sets ``vlayer: 7``. Layers are 0-based block
indices like theirs (:mod:`medsegflow.saliency.blocks`).

Noise is drawn from a ``torch.Generator`` seeded with ``seed`` on the model's device, so a
map is deterministic given its seed (on one device). Everything runs in float32.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medsegflow.errors import ConfigError
from medsegflow.saliency.blocks import TowerBlocks, check_layer, text_blocks, vision_blocks
from medsegflow.schema import complete

if TYPE_CHECKING:
    import torch

    from medsegflow.clip.bundle import ClipBundle

INITIAL_ALPHA = 5.0
"""Initial ``α`` (λ = sigmoid(5) ≈ 0.993), as in IBA and M2IB."""
COSINE_EPS = 1e-6

SALIENCY_SCHEMA = "families/text_sam.schema.yaml#/properties/saliency"


@dataclass(frozen=True)
class M2IBParams:
    """M2IB settings (see the module docstring for their meaning and sources).

    Attributes:
        vlayer, tlayer: 0-based block index of the vision / text bottleneck.
        vbeta, tbeta: weight of the information term.
        vvar, tvar: variance of the noise prior.
        steps: Adam steps on ``α``.
        lr: Adam learning rate.
        samples: noise draws per step (M2IB's batch size).
    """

    vlayer: int
    vbeta: float
    vvar: float
    tlayer: int
    tbeta: float
    tvar: float
    steps: int
    lr: float
    samples: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, *, key_prefix: str) -> M2IBParams:
        """A ``saliency:`` block completed by its schema (:data:`SALIENCY_SCHEMA`, which
        holds the defaults: M2IB's and MedCLIP-SAMv2's).

        Raises:
            ConfigError: naming ``<key_prefix>.<key>`` for an unknown key, a layer that is
                not an integer >= 0, a count that is not an integer >= 1, or a weight,
                variance or learning rate that is not a number > 0.
        """
        values = complete(config or {}, SALIENCY_SCHEMA, key=key_prefix)
        for name, value in values.items():
            if not math.isfinite(value):
                raise ConfigError(f"{key_prefix}.{name}: {value!r} must be a finite number")
        return cls(**values)


def minmax_normalise(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to [0, 1] as float32; a constant (or empty) array gives zeros.

    NaN values count as 0 (M2IB sums the information with ``nansum``).
    """
    array = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    if array.size == 0:
        return array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    span = high - low
    if not math.isfinite(span) or span <= 1e-12 * max(1.0, abs(high)):
        return np.zeros(array.shape, dtype=np.float32)
    return np.clip((array - low) / span, 0.0, 1.0).astype(np.float32)


class _Bottleneck:
    """Forward hook that replaces a block's output ``R`` (batch 1) by ``samples`` noisy
    copies ``Z`` (see the module docstring); holds ``α`` and the (constant) ``R``."""

    def __init__(
        self, *, var: float, samples: int, batch_first: bool, generator: torch.Generator
    ) -> None:
        self.std = math.sqrt(var)
        self.samples = samples
        self.batch_first = batch_first
        self.generator = generator
        self.alpha: torch.Tensor | None = None
        self.features: torch.Tensor | None = None

    def __call__(self, module: Any, args: Any, output: Any) -> Any:
        import torch

        hidden = output[0] if isinstance(output, tuple) else output
        r = hidden if self.batch_first else hidden.transpose(0, 1)
        if r.shape[0] != 1:
            raise RuntimeError(f"M2IB bottleneck expects one input, got a batch of {r.shape[0]}")
        r = r[0].float()  # (T, D)
        if self.alpha is None:
            self.alpha = torch.full(
                r.shape, INITIAL_ALPHA, device=r.device, dtype=torch.float32, requires_grad=True
            )
            self.features = r.detach()
        lam = torch.sigmoid(self.alpha)
        noise = torch.randn(
            (self.samples, *r.shape), generator=self.generator, device=r.device, dtype=r.dtype
        )
        z = (lam * r + (1 - lam) * self.std * noise).to(hidden.dtype)  # (S, T, D)
        if not self.batch_first:
            z = z.transpose(0, 1)
        return (z, *output[1:]) if isinstance(output, tuple) else z

    def information(self) -> torch.Tensor:
        """``(T, D)`` KL of each token-feature's channel (nats), differentiable in ``α``."""
        import torch
        import torch.nn.functional as F

        if self.alpha is None or self.features is None:
            raise RuntimeError("M2IB bottleneck was never reached: the hooked block did not run")
        lam = torch.sigmoid(self.alpha)
        mu = lam * self.features / self.std
        var = (1 - lam) ** 2
        log_var = 2 * F.logsigmoid(-self.alpha)  # log (1 - λ)², stable for large α
        return 0.5 * (mu**2 + var - 1 - log_var)


@contextlib.contextmanager
def _frozen(model: Any) -> Iterator[None]:
    """Eval mode, no gradient to the weights, gradients enabled; restored afterwards."""
    import torch

    training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


@contextlib.contextmanager
def _hooked(block: Any, hook: _Bottleneck) -> Iterator[None]:
    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _generator(device: torch.device, seed: int) -> torch.Generator:
    import torch

    return torch.Generator(device=device).manual_seed(int(seed))


def _information(
    blocks: TowerBlocks,
    layer: int,
    run: Callable[[], torch.Tensor],
    target: torch.Tensor,
    *,
    beta: float,
    var: float,
    params: M2IBParams,
    seed: int,
) -> torch.Tensor:
    """Optimise a bottleneck after ``blocks[layer]``; ``(T,)`` information per token.

    ``run`` computes the tower's embeddings ``(samples, E)`` of one input (the hook makes
    the copies); ``target`` is the other modality's ``(1, E)`` embedding.
    """
    import torch
    import torch.nn.functional as F

    bottleneck = _Bottleneck(
        var=var,
        samples=params.samples,
        batch_first=blocks.batch_first,
        generator=_generator(target.device, seed),
    )
    optimiser = None
    with _hooked(blocks.blocks[layer], bottleneck):
        for _ in range(params.steps):
            embeddings = run().float()
            if optimiser is None:
                optimiser = torch.optim.Adam([bottleneck.alpha], lr=params.lr)
            fit = F.cosine_similarity(embeddings, target, dim=-1, eps=COSINE_EPS).mean()
            loss = beta * bottleneck.information().mean() - fit
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        return bottleneck.information().sum(dim=-1)


def _patch_map(info: torch.Tensor, grid: tuple[int, int], size_yx: tuple[int, int]) -> np.ndarray:
    """Patch tokens' information on the grid, bilinear to ``size_yx``, normalised."""
    import torch.nn.functional as F

    gh, gw = grid
    if info.numel() < gh * gw:
        raise ValueError(f"M2IB: {info.numel()} vision tokens, fewer than the {gh}x{gw} grid")
    patches = info[info.numel() - gh * gw :].reshape(1, 1, gh, gw)
    upsampled = F.interpolate(patches, size=size_yx, mode="bilinear", align_corners=False)
    return minmax_normalise(upsampled[0, 0].cpu().numpy())


def _check_image(image_u8: np.ndarray) -> np.ndarray:
    image = np.asarray(image_u8)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)
    ):
        raise ValueError(
            f"M2IB: expected a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}"
        )
    return image


def image_saliency(
    bundle: ClipBundle,
    image_u8: np.ndarray,
    texts: Sequence[str],
    params: M2IBParams,
    *,
    seed: int,
    key_prefix: str = "saliency",
) -> np.ndarray:
    """M2IB saliency of ``texts`` on an image.

    Args:
        bundle: the CLIP model (open_clip ViT or timm ViT vision tower).
        image_u8: ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8 image.
        texts: one or more sentences; their maps are averaged (module docstring).
        params: M2IB settings; ``params.vlayer`` is checked against the model.
        seed: seeds the noise (the same for every sentence).
        key_prefix: config key of ``params`` for messages (``methods.<m>.saliency``).

    Returns:
        ``(H, W)`` float32 in [0, 1] (max 1 and min 0 unless the map is flat: zeros).

    Raises:
        ConfigError: ``vlayer`` is not a usable block of the model, naming the key.
    """
    import torch

    image = _check_image(image_u8)
    sentences = [str(t) for t in ([texts] if isinstance(texts, str) else texts)]
    if not sentences:
        raise ValueError("M2IB: no text to explain the image with")
    model = bundle.model
    blocks = vision_blocks(model, name=bundle.name)
    layer = check_layer(blocks, params.vlayer, key=f"{key_prefix}.vlayer", model_name=bundle.name)
    device = _device(model)
    pixels = bundle.image_tensor([image]).to(device=device, dtype=torch.float32)
    maps = []
    with _frozen(model):
        with torch.no_grad():
            targets = model.encode_text(bundle.tokenizer(sentences).to(device)).float()
        for target in targets:
            info = _information(
                blocks,
                layer,
                lambda: model.encode_image(pixels),
                target[None],
                beta=params.vbeta,
                var=params.vvar,
                params=params,
                seed=seed,
            )
            size_yx = (image.shape[0], image.shape[1])
            maps.append(_patch_map(info, blocks.grid(bundle.image_size), size_yx))
    return maps[0] if len(maps) == 1 else minmax_normalise(np.mean(maps, axis=0))


def _kept_tokens(tokenizer: Any, ids: torch.Tensor) -> torch.Tensor:
    """Bool mask of the real tokens of a ``(L,)`` tokenized text (no padding)."""
    import torch

    hf = getattr(tokenizer, "tokenizer", None)
    if hf is not None and getattr(hf, "pad_token_id", None) is not None:
        return ids != int(hf.pad_token_id)
    eot = getattr(tokenizer, "eot_token_id", None)
    if eot is not None and bool((ids == eot).any()):  # open_clip BPE: up to end-of-text
        last = int(torch.nonzero(ids == eot)[0, 0])
        return torch.arange(ids.numel(), device=ids.device) <= last
    return ids != 0


def _token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is not None and hasattr(hf, "convert_ids_to_tokens"):
        return [str(t) for t in hf.convert_ids_to_tokens(list(ids))]
    decoder = getattr(tokenizer, "decoder", None)
    if isinstance(decoder, Mapping):
        return [str(decoder.get(i, i)).replace("</w>", "") for i in ids]
    return [str(i) for i in ids]


def text_saliency(
    bundle: ClipBundle,
    image_u8: np.ndarray,
    text: str,
    params: M2IBParams,
    *,
    seed: int,
    key_prefix: str = "saliency",
) -> list[tuple[str, float]]:
    """M2IB relevance of each token of ``text`` for the image.

    Returns:
        ``[(token, score)]`` for every token the tokenizer produced (special tokens such
        as ``[CLS]``/``[SEP]`` or start/end-of-text included, padding excluded), scores
        min-max normalised to [0, 1] over those tokens.

    Raises:
        ConfigError: ``tlayer`` is not a usable block of the text tower, naming the key.
    """
    import torch

    image = _check_image(image_u8)
    model = bundle.model
    blocks = text_blocks(model, name=bundle.name)
    layer = check_layer(blocks, params.tlayer, key=f"{key_prefix}.tlayer", model_name=bundle.name)
    device = _device(model)
    tokens = bundle.tokenizer([str(text)]).to(device)
    kept = _kept_tokens(bundle.tokenizer, tokens[0])
    with _frozen(model):
        with torch.no_grad():
            pixels = bundle.image_tensor([image]).to(device=device, dtype=torch.float32)
            target = model.encode_image(pixels).float()
        info = _information(
            blocks,
            layer,
            lambda: model.encode_text(tokens),
            target,
            beta=params.tbeta,
            var=params.tvar,
            params=params,
            seed=seed,
        )
    if info.numel() != tokens.shape[1]:
        raise ValueError(f"M2IB: {info.numel()} text states for {tokens.shape[1]} tokens")
    scores = minmax_normalise(info[kept].cpu().numpy())
    names = _token_strings(bundle.tokenizer, tokens[0][kept].tolist())
    return [(name, float(score)) for name, score in zip(names, scores, strict=True)]
