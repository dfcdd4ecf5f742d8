"""Parity with torch.nn.functional + autograd over a grid of every option
combination and layout, losses and gradients, float64 and float32.

Runs wherever torch is installed; on CI (CI=true) a missing torch is a failure:
every test takes the ``torch`` fixture of conftest.py, which calls require_torch().
"""

import itertools

import numpy as np
import pytest

import fastxent as fx
from conftest import REDUCTIONS, check_grad_type, check_loss_type, close_ieee, make_logits, make_probs
from registry import BLOCKS

# float64: both sides are exact to ~1e-15; 1e-9 allows for different summation
#   orders (torch's cascade sum vs our float64 blocks) and PyTorch's float32
#   constants (e.g. BCE's EPSILON) while still catching any semantic difference.
# float32: both sides round each element to float32 (torch also accumulates in
#   float32); 5e-5 covers a few ulps of exp/log per element plus the reduction.
RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 5e-5}


def _torch_run(torch, fn, x, **kw):
    xt = torch.tensor(x, requires_grad=True)
    loss = fn(xt, **kw)
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


def _check_types(loss, grad, x, reduction, torch_loss):
    """fastxent's result types: a NumPy scalar of the input dtype (mean/sum) or an array
    shaped like torch's; the gradient shaped and typed like the input."""
    check_grad_type(grad, x)
    check_loss_type(loss, x.dtype, reduction, np.shape(torch_loss))


# ------------------------------------------------------------------ cross_entropy
CE_LAYOUTS = {"C": ((7,), 1), "NC": ((9, 7), 1), "NCdd": ((3, 7, 2, 3), 1),
              "BTV_axis-1": ((2, 4, 7), -1)}


def _ce_grid():
    for layout, weighted, ignore, ls, soft in itertools.product(
            CE_LAYOUTS, (False, True), (False, True), (0.0, 0.1), (False, True)):
        if soft and ignore:
            continue  # PyTorch rejects ignore_index with probability targets
        yield layout, weighted, ignore, ls, soft


@pytest.mark.parametrize("layout,weighted,ignore,label_smoothing,soft", list(_ce_grid()))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_parity(torch, rng, dtype, reduction, layout, weighted, ignore,
                              label_smoothing, soft):
    F = torch.nn.functional
    shape, axis = CE_LAYOUTS[layout]
    C = 7
    x = make_logits(rng, shape, dtype)
    cax = 0 if len(shape) == 1 else axis % len(shape)
    if soft:
        tgt = make_probs(rng, shape, cax, dtype)
    else:
        tshape = () if len(shape) == 1 else shape[:cax] + shape[cax + 1:]
        tgt = rng.integers(0, C, size=tshape)
        if ignore and tgt.ndim:
            tgt.reshape(-1)[::3] = 5
            tgt.reshape(-1)[1] = 0
    w = rng.uniform(0.2, 2.0, C).astype(dtype) if weighted else None
    ii = 5 if ignore else -100

    kw = dict(reduction=reduction, label_smoothing=label_smoothing, ignore_index=ii)
    loss, grad = fx.cross_entropy(x, tgt, w, axis=axis, return_grad=True, **kw)

    # PyTorch's layout has the class axis at 1: move it there for axis=-1
    move = len(shape) > 1 and cax != 1
    xt_np = np.moveaxis(x, cax, 1) if move else x
    tt_np = np.moveaxis(tgt, cax, 1) if (move and soft) else tgt
    tw = None if w is None else torch.tensor(w)
    l_t, g_t = _torch_run(torch, lambda a: F.cross_entropy(a, torch.tensor(tt_np), tw, **kw),
                          np.ascontiguousarray(xt_np))
    if move:
        g_t = np.moveaxis(g_t, 1, cax)
    _check_types(loss, grad, x, reduction, l_t)
    close_ieee(loss, l_t, dtype, "loss", rtol=RTOL[np.dtype(dtype)])
    close_ieee(grad, g_t, dtype, "grad", rtol=RTOL[np.dtype(dtype)])


def test_cross_entropy_parity_extreme_logits(torch, dtype):
    F = torch.nn.functional
    inf = np.inf
    x = np.array([[1e4, -1e4, 0.5, 1.0],
                  [1e30, -1e30, 0.0, 2.0],
                  [-inf, 0.5, -inf, 1.0],
                  [-inf, -inf, 3.0, -inf],
                  [-1e30, 1e30, -inf, 0.0]], dtype=dtype)
    t = np.array([0, 1, 3, 2, 3])
    w = np.array([0.5, 1.0, 2.0, 1.5], dtype)
    for reduction in REDUCTIONS:
        for weight in (None, w):
            loss, grad = fx.cross_entropy(x, t, weight, reduction=reduction, return_grad=True)
            l_t, g_t = _torch_run(torch, lambda a: F.cross_entropy(
                a, torch.tensor(t), None if weight is None else torch.tensor(weight),
                reduction=reduction), x)
            close_ieee(loss, l_t, dtype, "loss", rtol=RTOL[np.dtype(dtype)])
            close_ieee(grad, g_t, dtype, "grad", rtol=RTOL[np.dtype(dtype)])
            np.testing.assert_array_equal(grad[np.isneginf(x)], 0)


def test_cross_entropy_parity_all_ignored(torch, dtype):
    F = torch.nn.functional
    x = make_logits(np.random.default_rng(1), (4, 5), dtype)
    t = np.full(4, 2)
    for ls, reduction in itertools.product((0.0, 0.2), REDUCTIONS):
        loss, grad = fx.cross_entropy(x, t, ignore_index=2, label_smoothing=ls,
                                      reduction=reduction, return_grad=True)
        l_t, g_t = _torch_run(torch, lambda a: F.cross_entropy(
            a, torch.tensor(t), ignore_index=2, label_smoothing=ls, reduction=reduction), x)
        close_ieee(loss, l_t, dtype, f"loss ls={ls}", rtol=RTOL[np.dtype(dtype)])
        close_ieee(grad, g_t, dtype, f"grad ls={ls}", rtol=RTOL[np.dtype(dtype)])


# ------------------------------------------------------------------------ nll_loss
NLL_LAYOUTS = {"C": ((6,), 1), "NC": ((8, 6), 1), "NCdd": ((2, 6, 3, 2), 1),
               "BTV_axis-1": ((2, 3, 6), -1)}


@pytest.mark.parametrize("layout,weighted,ignore",
                         list(itertools.product(NLL_LAYOUTS, (False, True), (False, True))))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_parity(torch, rng, dtype, reduction, layout, weighted, ignore):
    F = torch.nn.functional
    shape, axis = NLL_LAYOUTS[layout]
    C = 6
    cax = 0 if len(shape) == 1 else axis % len(shape)
    z = rng.standard_normal(shape) * 2
    lp = (z - np.log(np.exp(z).sum(axis=cax, keepdims=True))).astype(dtype)
    tshape = () if len(shape) == 1 else shape[:cax] + shape[cax + 1:]
    t = rng.integers(0, C, size=tshape)
    if ignore and t.ndim:
        t.reshape(-1)[::2] = 4
        t.reshape(-1)[1] = 0
    w = rng.uniform(0.2, 2.0, C).astype(dtype) if weighted else None
    ii = 4 if ignore else -100
    loss, grad = fx.nll_loss(lp, t, w, ignore_index=ii, reduction=reduction, axis=axis,
                             return_grad=True)
    move = len(shape) > 1 and cax != 1
    lpt = np.ascontiguousarray(np.moveaxis(lp, cax, 1)) if move else lp
    l_t, g_t = _torch_run(torch, lambda a: F.nll_loss(
        a, torch.tensor(t), None if w is None else torch.tensor(w), ignore_index=ii,
        reduction=reduction), lpt)
    if move:
        g_t = np.moveaxis(g_t, 1, cax)
    _check_types(loss, grad, lp, reduction, l_t)
    close_ieee(loss, l_t, dtype, "loss", rtol=RTOL[np.dtype(dtype)])
    close_ieee(grad, g_t, dtype, "grad", rtol=RTOL[np.dtype(dtype)])


# -------------------------------------------------- binary_cross_entropy_with_logits
BCE_LAYOUTS = {"N": (8,), "NC": (6, 4), "NCHW": (2, 3, 4, 2)}


def _bcel_grid():
    for layout, shape in BCE_LAYOUTS.items():
        wshapes = {"none": None, "last": shape[-1:], "rows": (shape[0],) + (1,) * (len(shape) - 1)}
        pshapes = {"none": None, "last": shape[-1:]}
        if len(shape) == 4:
            pshapes["chan"] = (shape[1], 1, 1)
        for (wn, ws), (pn, ps) in itertools.product(wshapes.items(), pshapes.items()):
            yield pytest.param(shape, ws, ps, id=f"{layout}-w_{wn}-pw_{pn}")


@pytest.mark.parametrize("shape,wshape,pshape", list(_bcel_grid()))
@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_parity(torch, rng, dtype, reduction, hard, shape, wshape, pshape):
    F = torch.nn.functional
    x = make_logits(rng, shape, dtype, scale=4.0)
    t = rng.random(shape)
    t = (t < 0.5 if hard else t).astype(dtype)
    w = None if wshape is None else rng.uniform(0, 2, wshape).astype(dtype)
    pw = None if pshape is None else rng.uniform(0.1, 5, pshape).astype(dtype)
    loss, grad = fx.binary_cross_entropy_with_logits(x, t, w, pos_weight=pw,
                                                     reduction=reduction, return_grad=True)
    l_t, g_t = _torch_run(torch, lambda a: F.binary_cross_entropy_with_logits(
        a, torch.tensor(t), None if w is None else torch.tensor(w),
        pos_weight=None if pw is None else torch.tensor(pw), reduction=reduction), x)
    _check_types(loss, grad, x, reduction, l_t)
    close_ieee(loss, l_t, dtype, "loss", rtol=RTOL[np.dtype(dtype)])
    close_ieee(grad, g_t, dtype, "grad", rtol=RTOL[np.dtype(dtype)])


def test_bce_with_logits_parity_extreme(torch, dtype):
    F = torch.nn.functional
    x = np.array([[1e4, -1e4, 1e30, -1e30, 88.0, -88.0, 0.0]] * 3, dtype=dtype).T.copy()
    t = np.array([[0.0, 1.0, 0.5]] * 7, dtype=dtype)
    pw = np.array([2.0, 0.5, 3.0], dtype)
    for reduction in REDUCTIONS:
        for p in (None, pw):
            loss, grad = fx.binary_cross_entropy_with_logits(x, t, pos_weight=p,
                                                             reduction=reduction,
                                                             return_grad=True)
            l_t, g_t = _torch_run(torch, lambda a: F.binary_cross_entropy_with_logits(
                a, torch.tensor(t), pos_weight=None if p is None else torch.tensor(p),
                reduction=reduction), x)
            close_ieee(loss, l_t, dtype, "loss", rtol=RTOL[np.dtype(dtype)])
            close_ieee(grad, g_t, dtype, "grad", rtol=RTOL[np.dtype(dtype)])


# ----------------------------------------------------------------- binary_cross_entropy
@pytest.mark.parametrize("edges", [False, True])
@pytest.mark.parametrize("wname", ["none", "full", "last", "rows"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_parity(torch, rng, dtype, reduction, wname, edges):
    F = torch.nn.functional
    shape = (6, 5)
    x = 1 / (1 + np.exp(-rng.standard_normal(shape) * 3))
    if edges:  # the clamped logs and the clamped gradient denominator
        x[0, :4] = [0.0, 1.0, 0.0, 1.0]
        x[1, :2] = [1e-30, 1 - 2 ** -20]
    x = x.astype(dtype)
    t = rng.random(shape).astype(dtype)
    t[2] = np.round(t[2])
    w = {"none": None, "full": shape, "last": (5,), "rows": (6, 1)}[wname]
    w = None if w is None else rng.uniform(0, 2, w).astype(dtype)
    loss, grad = fx.binary_cross_entropy(x, t, w, reduction=reduction, return_grad=True)
    # PyTorch's functional broadcasts weight to the target's shape itself
    l_t, g_t = _torch_run(torch, lambda a: F.binary_cross_entropy(
        a, torch.tensor(t), None if w is None else torch.tensor(w), reduction=reduction), x)
    _check_types(loss, grad, x, reduction, l_t)
    close_ieee(loss, l_t, dtype, "loss", rtol=RTOL[np.dtype(dtype)])
    close_ieee(grad, g_t, dtype, "grad", rtol=RTOL[np.dtype(dtype)])


# ---------------------------------------------------------------------------- kl_div
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")
@pytest.mark.parametrize("shape", [(6, 5), (3, 5, 4)], ids=str)
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "batchmean"])
def test_kl_div_parity(torch, rng, dtype, reduction, log_target, shape):
    F = torch.nn.functional
    z = rng.standard_normal(shape) * 2
    q = (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).astype(dtype)
    p = make_probs(rng, shape, 1, np.float64)
    if not log_target:
        p.reshape(-1)[::5] = 0.0
    tgt = (np.log(p) if log_target else p).astype(dtype)
    loss, grad = fx.kl_div(q, tgt, reduction=reduction, log_target=log_target,
                           return_grad=True)
    l_t, g_t = _torch_run(torch, lambda a: F.kl_div(
        a, torch.tensor(tgt), reduction=reduction, log_target=log_target), q)
    _check_types(loss, grad, q, reduction, l_t)
    # terms of both signs: scale a scalar's tolerance by the sum of |terms|
    items = F.kl_div(torch.tensor(q), torch.tensor(tgt), reduction="none",
                     log_target=log_target).double().abs().numpy()
    denom = {"none": 1, "sum": 1, "mean": q.size, "batchmean": shape[0]}[reduction]
    scale = None if reduction == "none" else items.sum() / denom
    close_ieee(loss, l_t, dtype, "loss", scale=scale, rtol=RTOL[np.dtype(dtype)])
    close_ieee(grad, g_t, dtype, "grad", rtol=RTOL[np.dtype(dtype)])


# ------------------------------------------------------------------ building blocks
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_building_blocks_parity(torch, rng, dtype, axis):
    x = make_logits(rng, (4, 6, 5), dtype)
    x[0, 0, :2] = -np.inf
    x[1, 2, 1] = 1e30
    xt = torch.tensor(x)
    for name, block in BLOCKS.items():     # entropy: torch.distributions' formula
        close_ieee(block.fx(x, **block.call_kw(axis)), block.torch(torch, xt, axis).numpy(), dtype,
                   f"{name} axis={axis}", rtol=RTOL[np.dtype(dtype)])
