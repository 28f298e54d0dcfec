"""Objectives against torch's own modules, the papers' code and known values, in float64."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from funcgan import losses as L
from funcgan import random as fr

probs = st.integers(0, 2**20).map(lambda s: torch.sigmoid(3 * fr.normal(fr.key(s), (17, 1), torch.float64)))
logits = st.integers(0, 2**20).map(lambda s: 4 * fr.normal(fr.key(s), (17, 1), torch.float64))
BCE, BCEL = nn.BCELoss(), nn.BCEWithLogitsLoss()


def _ones(x):
    return torch.ones_like(x)


def _zeros(x):
    return torch.zeros_like(x)


@given(p=probs, q=probs)
def test_bce_objective_equals_nn_bceloss(p, q):
    o = L.bce_probs()
    assert torch.equal(o.disc(p, q), BCE(p, _ones(p)) + BCE(q, _zeros(q)))
    assert torch.equal(o.gen(None, q), BCE(q, _ones(q)))
    assert torch.equal(o.disc_real(p) + o.disc_fake(q), o.disc(p, q))


def test_bce_sanitising_keeps_values_and_gradients_and_survives_nan():
    p = torch.tensor([[0.0], [0.3], [1.0]], dtype=torch.float64, requires_grad=True)
    ours = L.bce(p, 1.0)
    (g_ours,) = torch.autograd.grad(ours, p)
    q = p.detach().clone().requires_grad_(True)
    theirs = BCE(q, _ones(q))
    (g_theirs,) = torch.autograd.grad(theirs, q)
    assert torch.equal(ours, theirs) and torch.equal(g_ours, g_theirs)
    # a diverged run's NaN probability gives a finite loss instead of torch's eager range-check error
    assert torch.isfinite(L.bce(torch.tensor([[float("nan")], [2.0]]), 0.0))


@given(p=probs)
def test_seed003_clamped_logs(p):
    o = L.clamped_log()
    assert torch.equal(o.disc_real(p), -torch.log(torch.clamp(p, 1e-3, 1)).mean())
    assert torch.equal(o.disc_fake(p), -torch.log(1 - torch.clamp(p, 0, 1 - 1e-3)).mean())
    assert torch.equal(o.gen(None, p), torch.log(1 - torch.clamp(p, 0, 1 - 1e-3)).mean())


def test_clamped_log_saturation_is_where_its_clamps_pin_it():
    o = L.clamped_log()
    worst = o.disc(torch.zeros(4, 1, dtype=torch.float64), torch.ones(4, 1, dtype=torch.float64))
    assert abs(float(worst) - o.saturation[0]) < 1e-12 and abs(o.saturation[0] - 2 * math.log(1000)) < 1e-12
    o = L.bce_probs()
    assert float(o.gen(None, torch.zeros(3, 1))) == o.saturation[1] == 100.0


@given(r=logits, f=logits)
def test_logit_objectives_equal_bce_with_logits_and_probability_forms(r, f):
    pr, pf = torch.sigmoid(r), torch.sigmoid(f)
    ns, mm = L.nonsaturating(), L.minimax()
    torch.testing.assert_close(ns.disc(r, f), BCEL(r, _ones(r)) + BCEL(f, _zeros(f)), rtol=0, atol=0)
    torch.testing.assert_close(ns.disc(r, f), BCE(pr, _ones(pr)) + BCE(pf, _zeros(pf)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ns.gen(None, f), BCE(pf, _ones(pf)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mm.gen(None, f), torch.log(1 - pf).mean(), rtol=1e-10, atol=1e-12)
    assert torch.equal(mm.disc(r, f), ns.disc(r, f))


@given(r=logits, f=logits)
def test_separable_objectives_split_exactly(r, f):
    for name, factory in L.OBJECTIVES.items():
        o = factory()
        if o.separable:
            torch.testing.assert_close(o.disc_real(r.sigmoid() if o.output == "probs" else r)
                                       + o.disc_fake(f.sigmoid() if o.output == "probs" else f),
                                       o.disc(r.sigmoid() if o.output == "probs" else r,
                                              f.sigmoid() if o.output == "probs" else f), rtol=1e-15, atol=0)


@given(r=logits, f=logits)
def test_other_objectives_closed_forms(r, f):
    torch.testing.assert_close(L.lsgan().disc(r, f), 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean())
    torch.testing.assert_close(L.lsgan().gen(None, f), 0.5 * ((f - 1) ** 2).mean())
    torch.testing.assert_close(L.hinge().disc(r, f), torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean())
    torch.testing.assert_close(L.hinge().gen(None, f), -f.mean())
    torch.testing.assert_close(L.wasserstein().disc(r, f), f.mean() - r.mean())
    torch.testing.assert_close(L.wasserstein().gen(None, f), -f.mean())
    torch.testing.assert_close(L.l1(r, f), nn.L1Loss()(r, f))


@given(r=logits, f=logits)
def test_relativistic_objectives_equal_jolicoeur_martineaus_code(r, f):
    """The four relativistic losses as the paper's code (GAN_losses_iter.py) writes them, with
    y_pred = C(x_r), y_pred_fake = C(x_f), y = 1 and y2 = 0."""
    y, y2 = _ones(r), _zeros(r)
    want = {
        "rsgan": (BCEL(r - f, y), BCEL(f - r, y)),
        "rasgan": ((BCEL(r - f.mean(), y) + BCEL(f - r.mean(), y2)) / 2,
                   (BCEL(r - f.mean(), y2) + BCEL(f - r.mean(), y)) / 2),
        "ralsgan": ((((r - f.mean() - y) ** 2).mean() + ((f - r.mean() + y) ** 2).mean()) / 2,
                    (((r - f.mean() + y) ** 2).mean() + ((f - r.mean() - y) ** 2).mean()) / 2),
        "rahinge": ((torch.relu(1.0 - (r - f.mean())).mean() + torch.relu(1.0 + (f - r.mean())).mean()) / 2,
                    (torch.relu(1.0 + (r - f.mean())).mean() + torch.relu(1.0 - (f - r.mean())).mean()) / 2),
    }
    for name, (d, g) in want.items():
        o = L.objective(name)
        assert o.gen_needs_real and not o.separable
        torch.testing.assert_close(o.disc(r, f), d, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(o.gen(r, f), g, rtol=1e-14, atol=1e-15)


def test_known_values():
    """Hand-computed values at D outputs r = (1, -1), f = (0, 2)."""
    r = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    f = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    cases = {
        "nonsaturating": ((sp(-1) + sp(1)) / 2 + (sp(0) + sp(2)) / 2, (sp(0) + sp(-2)) / 2),
        "minimax": ((sp(-1) + sp(1)) / 2 + (sp(0) + sp(2)) / 2, -(sp(0) + sp(2)) / 2),
        "lsgan": (0.5 * (0 + 4) / 2 + 0.5 * (0 + 4) / 2, 0.5 * (1 + 1) / 2),
        "hinge": ((0 + 2) / 2 + (1 + 3) / 2, -1.0),
        "wasserstein": (1.0 - 0.0, -1.0),
        "rsgan": ((sp(-1) + sp(3)) / 2, (sp(1) + sp(-3)) / 2),
    }
    for name, (d, g) in cases.items():
        o = L.objective(name)
        assert abs(float(o.disc(r, f)) - d) < 1e-12, name
        assert abs(float(o.gen(r, f)) - g) < 1e-12, name


def test_relativistic_objectives_refuse_unequal_batches():
    with pytest.raises(ValueError, match="same shape"):
        L.rsgan().disc(torch.zeros(3, 1), torch.zeros(2, 1))


@pytest.mark.parametrize("kw,exc,match", [
    ({"disc": 1, "gen": lambda r, f: f}, TypeError, "must be functions"),
    ({"disc": lambda r, f: r, "gen": lambda r, f: f, "output": "percent"}, ValueError, "'logits' or 'probs'"),
    ({"disc": lambda r, f: r, "gen": lambda r, f: f, "disc_real": lambda r: r}, ValueError, "both disc_real"),
])
def test_bad_objectives_are_rejected(kw, exc, match):
    with pytest.raises(exc, match=match):
        L.Objective(**kw)


def test_unknown_objective_name():
    with pytest.raises(ValueError, match="unknown objective 'kl'; choose one of minimax"):
        L.objective("kl")
