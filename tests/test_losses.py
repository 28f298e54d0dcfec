"""Losses against torch's own modules and closed forms, in float64."""

from __future__ import annotations

import torch
from hypothesis import given, strategies as st
from torch import nn

from funcgan import losses as L
from funcgan import random as fr

probs = st.integers(0, 2**20).map(lambda s: torch.sigmoid(3 * fr.normal(fr.key(s), (17, 1), torch.float64)))
logits = st.integers(0, 2**20).map(lambda s: 4 * fr.normal(fr.key(s), (17, 1), torch.float64))


@given(p=probs, q=probs)
def test_bce_losses_equal_nn_bceloss(p, q):
    crit = nn.BCELoss()
    assert torch.equal(L.disc_bce(p, q), crit(p, torch.ones_like(p)) + crit(q, torch.zeros_like(q)))
    assert torch.equal(L.gen_bce_nonsaturating(q), crit(q, torch.ones_like(q)))


@given(p=probs)
def test_seed003_clamped_logs(p):
    torch.testing.assert_close(L.disc_clamped_log_real(p), -torch.log(torch.clamp(p, 1e-3, 1)).mean(), rtol=0, atol=0)
    torch.testing.assert_close(L.disc_clamped_log_fake(p), -torch.log(1 - torch.clamp(p, 0, 1 - 1e-3)).mean(), rtol=0, atol=0)
    torch.testing.assert_close(L.gen_clamped_log_saturating(p), torch.log(1 - torch.clamp(p, 0, 1 - 1e-3)).mean(), rtol=0, atol=0)


def test_clamped_logs_are_finite_at_the_extremes():
    p = torch.tensor([[0.0], [1.0]], dtype=torch.float64, requires_grad=True)
    for f in (L.disc_clamped_log_real, L.disc_clamped_log_fake, L.gen_clamped_log_saturating):
        v = f(p)
        (g,) = torch.autograd.grad(v, p)
        assert torch.isfinite(v) and torch.isfinite(g).all()


@given(r=logits, f=logits)
def test_logit_forms_equal_probability_forms(r, f):
    # where sigmoid does not saturate, the stable forms equal BCE on probabilities
    pr, pf = torch.sigmoid(r), torch.sigmoid(f)
    crit = nn.BCELoss()
    torch.testing.assert_close(L.disc_logistic(r, f), crit(pr, torch.ones_like(pr)) + crit(pf, torch.zeros_like(pf)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(L.gen_nonsaturating_logits(f), crit(pf, torch.ones_like(pf)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(L.gen_saturating_logits(f), torch.log(1 - pf).mean(), rtol=1e-10, atol=1e-12)


def test_logit_forms_are_stable_where_probabilities_saturate():
    big = torch.tensor([[80.0], [-80.0]], dtype=torch.float32, requires_grad=True)
    for v in (L.disc_logistic(big, big), L.gen_nonsaturating_logits(big), L.gen_saturating_logits(big)):
        (g,) = torch.autograd.grad(v, big)
        assert torch.isfinite(v) and torch.isfinite(g).all()


@given(r=logits, f=logits)
def test_other_objectives_closed_forms(r, f):
    torch.testing.assert_close(L.disc_least_squares(r, f), 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean())
    torch.testing.assert_close(L.gen_least_squares(f), 0.5 * ((f - 1) ** 2).mean())
    torch.testing.assert_close(L.disc_hinge(r, f), torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean())
    torch.testing.assert_close(L.gen_hinge(f), -f.mean())
    torch.testing.assert_close(L.disc_wasserstein(r, f), f.mean() - r.mean())
    torch.testing.assert_close(L.l1(r, f), nn.L1Loss()(r, f))
