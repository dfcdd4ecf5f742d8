"""Float64 NumPy reference for every fastxent function.

Written from the mathematics and from PyTorch's documented/implemented semantics
(aten/src/ATen/native/LossNLL.cpp, aten/src/ATen/native/Loss.cpp,
torch/nn/functional.py), independently of the package: this module must never
import fastxent.

Every loss returns ``(loss, grad)`` where ``loss`` is a float64 scalar (mean/sum)
or a float64 array ("none"), and ``grad`` is the analytic gradient of the returned
loss with respect to ``input`` (for "none": of ``loss.sum()``), in float64, with
the shape of ``input``.  Gradients are derived by hand below; ``numerical_grad``
provides central differences so that the tests can check the derivations.
"""

import numpy as np

REDUCTIONS = ("none", "mean", "sum")
# PyTorch Loss.cpp: constexpr float EPSILON = 1e-12 (a float32 constant)
BCE_EPSILON = float(np.float32(1e-12))


# --------------------------------------------------------------------------- helpers
def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _to_last(x, axis):
    """Move ``axis`` of x to the end and return (x2d (M, C), restore_shape)."""
    x = np.moveaxis(x, axis, -1)
    lead = x.shape[:-1]
    return x.reshape(-1, x.shape[-1]), lead


def _from_last(g2d, lead, axis, ndim):
    g = g2d.reshape(lead + (g2d.shape[-1],))
    return np.moveaxis(g, -1, axis if axis >= 0 else ndim + axis)


def _class_axis(ndim, axis):
    # PyTorch: class dim is 0 for a 1-D input, 1 otherwise; fastxent adds axis=.
    if ndim == 1:
        return 0
    axis = int(axis)
    if axis < 0:
        axis += ndim
    if not 0 <= axis < ndim:
        raise ValueError("bad axis")
    return axis


def _reduce(loss_items, reduction, denom):
    if reduction == "none":
        return loss_items
    if reduction == "sum":
        return np.float64(loss_items.sum())
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.float64(loss_items.sum()) / np.float64(denom)
    raise ValueError(reduction)


# ------------------------------------------------------------------ building blocks
def _lse_parts(x, axis):
    """(m, log(sum(exp(x - m)))) with m the finite-safe max, keepdims."""
    m = np.max(x, axis=axis, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_s = np.log(np.sum(np.exp(x - m_safe), axis=axis, keepdims=True))
    return m_safe, log_s


def logsumexp(x, axis=-1):
    """Stable log(sum(exp(x))) along axis; handles +-inf like scipy.special."""
    x = _f64(x)
    m, log_s = _lse_parts(x, axis)
    with np.errstate(invalid="ignore"):
        return np.squeeze(log_s + m, axis=axis)


def log_softmax(x, axis=-1):
    # (x - m) - log(s), not x - logsumexp(x): with |m| ~ 1e30 the latter would
    # absorb log(s) into m and return 0 for every class of a tied row
    x = _f64(x)
    m, log_s = _lse_parts(x, axis)
    with np.errstate(invalid="ignore"):
        return (x - m) - log_s


def softmax(x, axis=-1):
    with np.errstate(invalid="ignore", over="ignore"):
        return np.exp(log_softmax(x, axis=axis))


def sigmoid(x):
    x = _f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(-np.abs(x))  # in (0, 1], never overflows
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def log_sigmoid(x):
    # log sigmoid(x) = min(x, 0) - log1p(exp(-|x|))
    x = _f64(x)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def entropy(logits, axis=-1):
    """Entropy of softmax(logits) along axis; p == 0 terms contribute 0."""
    lp = log_softmax(logits, axis=axis)
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * lp, 0.0)
    return -np.sum(terms, axis=axis)


# -------------------------------------------------------------------- softmax losses
def _hard_labels(target, C, ignore_index):
    t = np.asarray(target)
    if t.dtype.kind not in "iub":
        raise TypeError("hard labels must be integers")
    # NumPy 2 compares integer arrays with Python ints exactly (no wrap-around of
    # uint64 against a negative ignore_index), so compare in the label's own dtype
    t = t.reshape(-1)
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= C))
    if bad.any():
        raise IndexError(f"target {t[bad][0]} out of range")
    tc = np.where(valid, t, 0).astype(np.int64)
    return tc, valid


def _check_weight(weight, C):
    if weight is None:
        return np.ones(C)
    w = _f64(weight).reshape(-1)
    if w.shape != (C,):
        raise ValueError("weight has the wrong length")
    return w


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean", axis=1):
    """PyTorch nll_loss over log-probabilities (LossNLL.cpp nll_loss_out_frame).

    loss_i = -w[t_i] * input[i, t_i] (0 where t_i == ignore_index);
    mean   = sum_i loss_i / sum_i w[t_i] over non-ignored items (0/0 = NaN);
    grad[i, t_i] = -w[t_i] * scale, all other entries 0.
    """
    x = _f64(input)
    ax = _class_axis(x.ndim, axis)
    x2, lead = _to_last(x if x.ndim > 1 else x[None, :], ax if x.ndim > 1 else 1)
    M, C = x2.shape
    tc, valid = _hard_labels(target, C, ignore_index)
    if tc.size != M:
        raise ValueError("shape mismatch")
    w = _check_weight(weight, C)
    wt = np.where(valid, w[tc], 0.0)
    picked = x2[np.arange(M), tc]
    with np.errstate(invalid="ignore"):
        items = np.where(valid, -wt * picked, 0.0)
    W = wt.sum()
    loss = _reduce(items.reshape(np.shape(target)), reduction, W)
    scale = 1.0 / W if (reduction == "mean" and W != 0) else 1.0
    g = np.zeros_like(x2)
    g[np.arange(M), tc] = np.where(valid, -wt * scale, 0.0)
    grad = g.reshape(x.shape) if x.ndim == 1 else _from_last(g, lead, ax, x.ndim)
    return loss, grad


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, axis=1):
    """PyTorch cross_entropy (LossNLL.cpp cross_entropy_loss_symint and helpers).

    Hard labels (integer target):
      nll_i    = -w[t_i] logp[i, t_i]                      (0 if ignored)
      smooth_i = -sum_c w_c logp[i, c]                     (0 if ignored)
      none: (1-eps) nll_i + eps/C smooth_i
      mean: (1-eps) sum nll / W + eps/C sum smooth / W,  W = sum w[t_i] (non-ignored)
      The smoothing term is only formed when eps > 0, as in PyTorch.
      grad_i = scale_i [(1-eps) w[t_i] (p_i - e_{t_i}) + eps/C (sum(w) p_i - w)]
    Soft targets (float target shaped like input):
      tt = (1-eps) t + eps/C;  loss_i = -sum_c w_c tt_c logp_c
      (fastxent's documented deviation: a term with tt_c == 0 contributes 0 even if
      logp_c = -inf; PyTorch gives NaN there);  mean = sum_i loss_i / M (M items);
      grad_i = scale (S_i p_i - w * tt_i),  S_i = sum_c w_c tt_c.
    """
    x = _f64(input)
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError("label_smoothing")
    ax = _class_axis(x.ndim, axis)
    if x.ndim == 1:
        x2, lead, ax2 = x[None, :], (), 1
    else:
        x2, lead = _to_last(x, ax)
        ax2 = ax
    M, C = x2.shape
    w = _check_weight(weight, C)
    lp = log_softmax(x2, axis=1)
    p = np.exp(lp)
    tgt = np.asarray(target)

    def restore(g2):
        return g2.reshape(x.shape) if x.ndim == 1 else _from_last(g2, lead, ax2, x.ndim)

    if tgt.dtype.kind == "f":  # ------------------------------------ soft targets
        if tgt.shape != x.shape:
            raise ValueError("shape mismatch")
        t2 = _f64(tgt)[None, :] if x.ndim == 1 else _to_last(_f64(tgt), ax)[0]
        tt = t2 * (1.0 - eps) + eps / C if eps > 0 else t2
        wtt = w[None, :] * tt
        with np.errstate(invalid="ignore"):
            terms = np.where(wtt == 0, 0.0, wtt * lp)
        items = -terms.sum(axis=1)
        loss = _reduce(items.reshape(lead), reduction, M)
        scale = 1.0 / M if reduction == "mean" else 1.0
        S = wtt.sum(axis=1, keepdims=True)
        g2 = scale * (S * p - wtt)
        return loss, restore(g2)

    # ---------------------------------------------------------------- hard labels
    if tgt.shape != tuple(lead):
        raise ValueError("shape mismatch")
    tc, valid = _hard_labels(tgt, C, ignore_index)
    rows = np.arange(M)
    wt = np.where(valid, w[tc], 0.0)
    with np.errstate(invalid="ignore"):
        nll = np.where(valid, -wt * lp[rows, tc], 0.0)
        if eps > 0:
            smooth = np.where(valid, -(lp * w[None, :]).sum(axis=1), 0.0)
            items = (1.0 - eps) * nll + (eps / C) * smooth
        else:
            items = nll
    W = wt.sum()
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            if eps > 0:
                loss = (1.0 - eps) * (nll.sum() / W) + (eps / C) * (smooth.sum() / W)
            else:
                loss = nll.sum() / W
        loss = np.float64(loss)
    else:
        loss = _reduce(items.reshape(tgt.shape), reduction, None)
    scale = 1.0 / W if (reduction == "mean" and W != 0) else 1.0
    onehot = np.zeros_like(p)
    onehot[rows, tc] = 1.0
    g2 = (1.0 - eps) * wt[:, None] * (p - onehot)
    if eps > 0:
        g2 = g2 + (eps / C) * (w.sum() * p - w[None, :])
    g2 = np.where(valid[:, None], g2 * scale, 0.0)
    return loss, restore(g2)


# -------------------------------------------------------------------- sigmoid losses
def _bcast(a, shape, name):
    if a is None:
        return None
    a = _f64(a)
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {a.shape} does not broadcast to {shape}")


def binary_cross_entropy_with_logits(input, target, weight=None, pos_weight=None,
                                     reduction="mean"):
    """PyTorch Loss.cpp binary_cross_entropy_with_logits:

    lw   = 1 + (pos_weight - 1) * t       (1 without pos_weight)
    loss = w * ((1 - t) x - lw * log_sigmoid(x))
    d/dx = w * ((1 - t) - lw * sigmoid(-x))   (= w (sigmoid(x) - t) when lw = 1)
    mean = sum / numel.

    The loss is evaluated in the form that never cancels, -log_sigmoid(x) =
    max(-x, 0) + log1p(exp(-|x|)) split by the sign of x:
        x >= 0: (1 - t) x + lw log1p(exp(-x))
        x <  0: -pw t x  + lw log1p(exp(x))
    and a zero coefficient times an infinite logit counts 0, so infinite logits give the
    loss's limit (fastxent's documented choice; PyTorch's one formula gives NaN for
    x = +inf, t = 1 and for x = -inf, t = 0 or 1).
    """
    x = _f64(input)
    t = _f64(np.asarray(target))
    if t.shape != x.shape:
        raise ValueError("shape mismatch")
    w = _bcast(weight, x.shape, "weight")
    pw = _bcast(pos_weight, x.shape, "pos_weight")
    pwv = 1.0 if pw is None else pw
    lw = 1.0 + (pwv - 1.0) * t
    coef = np.where(x >= 0, 1.0 - t, -pwv * t)
    with np.errstate(invalid="ignore"):
        lin = np.where(coef == 0, 0.0, coef * x)
    items = lin + lw * np.log1p(np.exp(-np.abs(x)))
    g = (1.0 - t) - lw * sigmoid(-x)
    if w is not None:
        items = items * w
        g = g * w
    loss = _reduce(items, reduction, x.size)
    if reduction == "mean":
        g = g / x.size
    return loss, np.array(g, dtype=np.float64)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """PyTorch Loss.cpp binary_cross_entropy:

    loss = -w (t max(log x, -100) + (1 - t) max(log(1 - x), -100))
    grad = w (x - t) / max(x (1 - x), EPSILON)    (binary_cross_entropy_backward)

    PyTorch declares ``constexpr float EPSILON = 1e-12`` so the clamp is the float32
    value nearest 1e-12 (9.99999996e-13), also for float64 inputs.
    """
    x = _f64(input)
    t = _f64(np.asarray(target))
    if t.shape != x.shape:
        raise ValueError("shape mismatch")
    if np.any((x < 0) | (x > 1)):
        raise ValueError("input outside [0, 1]")
    w = _bcast(weight, x.shape, "weight")
    with np.errstate(divide="ignore"):
        logx = np.maximum(np.log(x), -100.0)
        log1mx = np.maximum(np.log1p(-x), -100.0)
    items = -(t * logx + (1.0 - t) * log1mx)
    g = (x - t) / np.maximum(x * (1.0 - x), BCE_EPSILON)
    if w is not None:
        items = items * w
        g = g * w
    loss = _reduce(items, reduction, x.size)
    if reduction == "mean":
        g = g / x.size
    return loss, np.array(g, dtype=np.float64)


def kl_div(input, target, reduction="mean", log_target=False):
    """PyTorch kl_div (input = log q):

    log_target=False: loss = xlogy(t, t) - t * x,   d/dx = -t
    log_target=True : loss = exp(t) * (t - x),       d/dx = -exp(t)
    mean: / numel;  batchmean: / input.shape[0] (sum for a 0-d input).
    """
    x = _f64(input)
    t = _f64(target)
    if t.shape != x.shape:
        raise ValueError("shape mismatch")
    if log_target:
        et = np.exp(t)
        items = et * (t - x)
        g = -et
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            xlogy = np.where(t == 0, 0.0, t * np.log(np.where(t == 0, 1.0, t)))
        items = xlogy - t * x
        g = -t
    if reduction == "batchmean":
        denom = x.shape[0] if x.ndim > 0 else 1
        loss = np.float64(items.sum()) / denom
        g = g / denom
    else:
        loss = _reduce(items, reduction, x.size)
        if reduction == "mean":
            g = g / x.size
    return loss, np.array(g, dtype=np.float64)


# ------------------------------------------------------------- central differences
def numerical_grad(f, x, h=1e-6):
    """Central differences of the scalar function f at x (float64).

    The step is scaled by max(1, |x_i|) so that it stays meaningful for large x.
    Truncation error O(h^2 f''') ~ 1e-12, rounding error O(eps |f| / h) ~ 1e-10.
    """
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        step = h * max(1.0, abs(old))
        flat[i] = old + step
        fp = float(np.sum(f(x)))
        flat[i] = old - step
        fm = float(np.sum(f(x)))
        flat[i] = old
        gf[i] = (fp - fm) / (2 * step)
    return g
