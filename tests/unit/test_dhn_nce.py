"""DHN-NCE: hand-computed values (numpy loops), its DCL/InfoNCE limits, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsegflow.clip.dhn_nce import dhn_nce_loss

torch.set_num_threads(1)

IMAGE = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]])
TEXT = np.array([[0.8, 0.6, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _expected(image, text, *, tau, alpha, beta1, beta2, groups=None):
    """The paper's equations, one term at a time."""
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    n = len(image)
    groups = list(range(n)) if groups is None else list(groups)

    def direction(sim, beta):
        total, rows = 0.0, 0
        for i in range(n):
            negatives = [j for j in range(n) if groups[j] != groups[i]]
            if not negatives:
                continue
            norm = sum(math.exp(beta * sim[i][k]) for k in negatives)
            denominator = alpha * math.exp(sim[i][i])
            for j in negatives:
                weight = len(negatives) * math.exp(beta * sim[i][j]) / norm
                denominator += weight * math.exp(sim[i][j])
            total += -(sim[i][i] - math.log(denominator))
            rows += 1
        return total / rows

    sim = [[float(image[i] @ text[j]) / tau for j in range(n)] for i in range(n)]
    sim_t = [[sim[j][i] for j in range(n)] for i in range(n)]
    return direction(sim, beta1) + direction(sim_t, beta2)


def _loss(image, text, **kwargs):
    return float(dhn_nce_loss(torch.tensor(image), torch.tensor(text), **kwargs))


def test_hand_computed_3x3_value_with_the_paper_defaults():
    # unit rows, so I.T = [[0.8, 0, 0], [0.96, 0.8, 0], [0.36, 0.6, 0.8]]; s = I.T / 0.6.
    # image-to-text row 0: negatives s01 = s02 = 0, weights 2 e^0 / (e^0 + e^0) = 1 each:
    #   -(0.8 / 0.6 - log(1 + 1)) = -0.640186
    # rows 1, 2: 0.526884, 0.185584 -> mean 0.024094; text-to-image rows: 0.613937,
    # 0.013937, -0.640186 -> mean -0.004104; total 0.019990
    row0 = -(0.8 / 0.6 - math.log(2.0))
    assert row0 == pytest.approx(-0.6401861528, abs=1e-9)
    expected = _expected(IMAGE, TEXT, tau=0.6, alpha=0.0, beta1=0.15, beta2=0.15)
    assert expected == pytest.approx(0.0199901056, abs=1e-9)
    assert _loss(IMAGE, TEXT) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("alpha", "beta1", "beta2"), [(0.5, 0.3, 0.1), (1.0, 2.0, 0.0), (0.0, 0.0, 0.7)]
)
def test_matches_the_equations_for_other_settings(alpha, beta1, beta2):
    rng = np.random.default_rng(4)
    image, text = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    kwargs = {"alpha": alpha, "beta1": beta1, "beta2": beta2}
    expected = _expected(image, text, tau=0.3, **kwargs)
    assert _loss(image, text, temperature=0.3, **kwargs) == pytest.approx(expected, rel=1e-9)


def test_no_hardness_and_no_positive_term_is_the_decoupled_contrastive_loss():
    rng = np.random.default_rng(1)
    image, text = torch.tensor(rng.normal(size=(6, 4))), torch.tensor(rng.normal(size=(6, 4)))
    sim = F.normalize(image, dim=1) @ F.normalize(text, dim=1).T / 0.5
    off = ~torch.eye(6, dtype=torch.bool)

    def dcl(s):
        return (-s.diagonal() + torch.logsumexp(s.masked_fill(~off, -math.inf), dim=1)).mean()

    got = dhn_nce_loss(image, text, temperature=0.5, alpha=0.0, beta1=0.0, beta2=0.0)
    assert float(got) == pytest.approx(float(dcl(sim) + dcl(sim.T)), rel=1e-12)
    # alpha = 1 puts the positive back: InfoNCE (cross-entropy) in each direction
    info = dhn_nce_loss(image, text, temperature=0.5, alpha=1.0, beta1=0.0, beta2=0.0)
    labels = torch.arange(6)
    clip = F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels)
    assert float(info) == pytest.approx(float(clip), rel=1e-12)


def test_identical_captions_are_not_negatives():
    rng = np.random.default_rng(2)
    image, text = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    groups = [0, 0, 1, 2]
    expected = _expected(image, text, tau=0.6, alpha=0.0, beta1=0.15, beta2=0.15, groups=groups)
    got = _loss(image, text, groups=torch.tensor(groups))
    assert got == pytest.approx(expected, rel=1e-9)
    assert _loss(image, text, groups=torch.arange(4)) == pytest.approx(_loss(image, text))
    # a batch of one caption has no negative at all: zero, still differentiable
    image_t = torch.tensor(image, requires_grad=True)
    zero = dhn_nce_loss(image_t, torch.tensor(text), groups=torch.zeros(4, dtype=torch.long))
    zero.backward()
    assert float(zero.detach()) == 0.0 and torch.all(image_t.grad == 0)


def test_gradients_reach_both_towers_and_are_finite():
    rng = np.random.default_rng(3)
    image = torch.tensor(rng.normal(size=(8, 16)), requires_grad=True)
    text = torch.tensor(rng.normal(size=(8, 16)), requires_grad=True)
    groups = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])
    loss = dhn_nce_loss(image, text, groups=groups)
    loss.backward()
    for grad in (image.grad, text.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # a small step against the gradient lowers the loss
    with torch.no_grad():
        lower = dhn_nce_loss(image - 0.05 * image.grad, text - 0.05 * text.grad, groups=groups)
    assert float(lower) < float(loss.detach())


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="features must both be"):
        dhn_nce_loss(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        dhn_nce_loss(torch.ones(3, 4), torch.ones(3, 4), temperature=0.0)
    with pytest.raises(ValueError, match="groups"):
        dhn_nce_loss(torch.ones(3, 4), torch.ones(3, 4), groups=torch.zeros(2))
