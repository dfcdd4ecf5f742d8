"""The metrics kernel for rows of few classes (fx_metrics.h's metrics_items, issue 16 round
two) against the row kernel (metrics_rows) and against NumPy float64 references, per ISA,
at class counts around the switch points of every ISA and precision.

Expected per-row values (argmax, rank of the target, nll, confidence) and the sums made of
them come from NumPy; the two paths agreeing with each other (bit for bit where the
formulas are the same operations) is a check of fastxent against itself, and says so.
"""
import contextlib

import numpy as np
import pytest

import fastxent as fx
from fastxent import _core, metrics

from conftest import assert_same_bits, canonical_nan, tol

SWITCH_CLASSES = [2, 3, 8, 9, 24, 25, 56, 57, 72, 73, _core.ITEMS_MAX_C]
LABEL_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                np.uint64]
N_BINS = 15
ITEMS = _core.ITEMS_MAX_C
B = _core.METRICS_COUNTS_BINS       # counts: kept, hits, bad labels, then the bins


@contextlib.contextmanager
def path(items_max_c):
    """Force the path: ITEMS (every row of <= ITEMS_MAX_C classes takes the items kernel),
    0 (none)."""
    prev = _core._set_items_max_c(items_max_c)
    try:
        yield
    finally:
        _core._set_items_max_c(prev)


def run_kernel(x, y, *, top_k=1, class_weight=None, sample_weight=None, n_threads=1,
               clip=(0.05, 4.0), ignore_index=-100):
    n = x.shape[0]
    out = dict(nll=np.empty(n), conf=np.empty(n), argmax=np.empty(n, np.int64),
               above=np.empty(n, np.int64))
    sums, counts = _core.metrics_rows(
        x, y, ignore_index=ignore_index, class_weight=class_weight, sample_weight=sample_weight,
        top_k=top_k, clip_lo=clip[0], clip_hi=clip[1], edges=metrics._bin_edges(N_BINS),
        n_threads=n_threads, **out)
    return sums, counts, out


def reference_rank(row, t):
    """Classes ranked above t in scikit-learn's top_k order (stable argsort reversed: of
    equal logits the higher index first, NaN first)."""
    order = np.argsort(row, kind="mergesort")[::-1]
    return int(np.nonzero(order == t)[0][0])


def awkward_logits(rng, n, c, dtype):
    """Small integers (ties everywhere, ties at the max), and rows with NaN, +-inf,
    all -inf."""
    x = rng.integers(-3, 3, size=(n, c)).astype(dtype)
    x[1, c // 2] = np.nan
    x[2, [0, c - 1]] = np.nan
    x[3, c // 3] = np.inf
    x[4, :] = -np.inf
    x[5, :min(2, c - 1)] = -np.inf
    x[7, :] = 1.0                                   # all tied
    x[8, [0, c - 1]] = 5.0                          # two tied maxima, first and last
    x[40:60] *= 40                                  # confident rows: clipped, top bins
    return x


@pytest.mark.parametrize("c", SWITCH_CLASSES)
def test_items_against_rows_and_numpy(rng, dtype, isa, c):
    n = 203                                         # three groups of 64 and a partial one
    x = awkward_logits(rng, n, c, dtype)
    y = rng.integers(0, c, n)
    y[1] = c // 2                                   # a NaN target
    y[8] = c - 1                                    # the second of two tied maxima
    y[6] = y[20] = y[150] = -100
    cw = rng.random(c) + 0.2
    cw[0] = 0.0                                     # a zero weight drops its items' nll
    sw = rng.random(n) * 2
    top_k = min(3, c)
    results = {}
    for items_max_c in (0, ITEMS):
        with path(items_max_c):
            results[items_max_c] = run_kernel(x, y, top_k=top_k, class_weight=cw,
                                              sample_weight=sw)
            # nll has cross_entropy's bits on the same path (where kept), NaN compared as
            # NaN: the sign of a NaN made here (inf - inf) is x86's operand order, which
            # the compiler picks per kernel (see canonical_nan)
            ce = fx.cross_entropy(x, np.where(y < 0, -100, y), reduction="none", axis=-1)
            kept = y >= 0
            nll = results[items_max_c][2]["nll"]
            assert_same_bits(canonical_nan(nll[kept].astype(dtype)), canonical_nan(ce[kept]),
                             f"items_max_c={items_max_c}")
    (s_row, c_row, o_row), (s_it, c_it, o_it) = results[0], results[ITEMS]

    # per row: argmax and rank exactly NumPy's, on both paths
    x64 = x.astype(np.float64)
    ref_argmax = np.argmax(x64, axis=1)
    ref_above = np.array([reference_rank(x64[i], y[i]) if y[i] >= 0 else -1 for i in range(n)])
    for o in (o_row, o_it):
        np.testing.assert_array_equal(o["argmax"], ref_argmax)
        np.testing.assert_array_equal(o["above"], ref_above)
    # nll and conf against float64 on the rows without NaN/inf; NaN where there is none
    finite = np.isfinite(x64).all(axis=1)
    m = x64.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        s = np.exp(x64 - m).sum(axis=1)
    ref_nll = np.log(s) + m[:, 0] - x64[np.arange(n), np.where(y < 0, 0, y)]
    keep = finite & (y >= 0)
    for o in (o_row, o_it):
        np.testing.assert_allclose(o["nll"][keep], ref_nll[keep], rtol=tol(dtype), atol=tol(dtype))
        np.testing.assert_allclose(o["conf"][finite], 1 / s[finite], rtol=tol(dtype))
        assert np.isnan(o["conf"][[1, 2, 3, 4]]).all()
        assert (o["nll"][y == -100] == 0).all()

    # the block sums: counts exactly equal to NumPy's, float sums to rounding
    kept = y >= 0
    w = np.where(kept, cw[np.where(kept, y, 0)], 0.0)
    hit = kept & (ref_above < top_k)
    right = kept & (ref_argmax == y)
    for counts in (c_row, c_it):
        assert counts[0] == kept.sum() and counts[1] == hit.sum()
    np.testing.assert_array_equal(c_it, c_row)
    ref_sums = [np.sum(w[kept & (w != 0)] * o_row["nll"][kept & (w != 0)]), w.sum(), None,
                sw[hit].sum(), sw[kept].sum()]
    for sums, o in ((s_row, o_row), (s_it, o_it)):
        for k in (0, 1, 3, 4):
            np.testing.assert_allclose(sums[k], ref_sums[k], rtol=1e-12)
        clipped = np.clip(o["nll"], 0.05, 4.0)
        np.testing.assert_allclose(sums[2], np.sum(sw[kept] * clipped[kept]), rtol=1e-12)
    # the calibration bins against NumPy's searchsorted of the float32 confidences
    nb = N_BINS + 1
    edges = metrics._bin_edges(N_BINS)
    conf32 = o_it["conf"].astype(np.float32)
    bins = np.searchsorted(edges, conf32, side="right") - 1
    bins[np.isnan(conf32)] = nb - 1
    np.testing.assert_array_equal(c_it[B:B + nb], np.bincount(bins[kept], minlength=nb))
    np.testing.assert_array_equal(c_it[B + nb:], np.bincount(bins[right], minlength=nb))
    ref_bin_sums = np.bincount(bins[kept], weights=conf32[kept].astype(np.float64), minlength=nb)
    np.testing.assert_array_equal(s_it[5:-1], ref_bin_sums[:-1])    # exact: see fx_metrics.h
    assert np.isnan(s_it[-1]) and np.isnan(s_row[-1])               # NaN rows: the last bin
    np.testing.assert_allclose(s_it[5:-1], s_row[5:-1], rtol=tol(dtype))


@pytest.mark.parametrize("c", [3, 17, 40])
def test_items_label_dtypes_and_ignore_index(rng, c):
    n = 300
    x = rng.standard_normal((n, c)).astype(np.float32) * 3
    y = rng.integers(0, c, n)
    y[::11] = c + 5                                  # an ignore_index every dtype can hold
    with path(64):
        expected = run_kernel(x, y.astype(np.int64), top_k=2, ignore_index=c + 5)
        for dt in LABEL_DTYPES:
            got = run_kernel(x, y.astype(dt), top_k=2, ignore_index=c + 5)
            np.testing.assert_array_equal(got[0], expected[0], err_msg=np.dtype(dt).name)
            np.testing.assert_array_equal(got[1], expected[1], err_msg=np.dtype(dt).name)
            for k in expected[2]:
                np.testing.assert_array_equal(got[2][k], expected[2][k])
        assert expected[1][0] == np.count_nonzero(y != c + 5)
        assert (expected[2]["above"][::11] == -1).all()
        # no labels: every row ignored, nothing kept
        sums, counts, _ = run_kernel(x, None)
        assert counts.sum() == 0 and (sums == 0).all()


def test_items_bad_label_is_counted_not_added(rng):
    """A label outside [0, C) that is not ignore_index: the kernel does not index with
    it (nll NaN), adds nothing for it, and counts it (FX_MC_BAD), for the Python layer
    to raise."""
    x = rng.standard_normal((70, 5)).astype(np.float32)
    y = rng.integers(0, 5, 70)
    y[3] = 9
    for items_max_c in (0, ITEMS):
        with path(items_max_c):
            sums, counts, o = run_kernel(x, y)
        assert np.isnan(o["nll"][3]) and counts[0] == 69
        assert counts[2] == 1                       # FX_MC_BAD: the caller raises


def test_items_threads_and_evaluate_bits(rng):
    """Blocks fixed by the shape: 1 and 2 threads give the same bits (fastxent against
    itself), through evaluate on the default switch and the kernel on the items path."""
    n, c = 100_003, 10
    x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    y = rng.integers(0, c, n)
    y[::13] = -100
    assert metrics.evaluate(x, y, top_k=3, n_threads=1) == metrics.evaluate(x, y, top_k=3,
                                                                            n_threads=2)
    sw = rng.random(n)
    with path(64):
        a = run_kernel(x, y, top_k=2, sample_weight=sw, n_threads=1)
        b = run_kernel(x, y, top_k=2, sample_weight=sw, n_threads=2)
    for u, v in zip(a[:2], b[:2]):
        assert_same_bits(u, v)


def near_edge_logits(dtype, n_bins):
    """Two-class rows (0, -d) whose top-1 confidence 1 / (1 + e^-d) lands on every bin
    edge and the float32 values around it (d swept finely about the edge's logit), plus
    confidences of exactly 1 (d = 200) and exactly 1/2 (d = 0)."""
    edges = metrics._bin_edges(n_bins).astype(np.float64)
    inner = edges[(edges > 0.5) & (edges < 1)]
    d0 = np.log(inner / (1 - inner))
    # the confidence's derivative in d is c (1 - c): steps of about a float32 ulp of c
    steps = np.arange(-40, 41)[None, :] * (2.0 ** -24 / (inner * (1 - inner)))[:, None]
    d = np.concatenate([(d0[:, None] + steps).ravel(), [200.0, 0.0]])
    x = np.stack([np.zeros_like(d), -d], axis=1).astype(dtype)
    return x


@pytest.mark.parametrize("n_bins", [15, 10, 7, 100])
def test_items_bins_at_the_edges(isa, dtype, n_bins):
    """The items kernel's lane-wise bins (floor(c n_bins) with a guard band about each
    edge) give searchsorted's bin of the float32 confidence, also at and beside the
    edges and at c == 1; and arbitrary sorted edges (not linspace) take the exact walk."""
    x = near_edge_logits(dtype, n_bins)
    n = x.shape[0]
    y = np.zeros(n, np.int64)
    out = dict(nll=np.empty(n), conf=np.empty(n), argmax=np.empty(n, np.int64),
               above=np.empty(n, np.int64))
    rng = np.random.default_rng(n_bins)
    odd = np.sort(rng.random(n_bins + 1).astype(np.float32))
    odd[0], odd[-1] = 0, 1
    for edges in (metrics._bin_edges(n_bins), odd):
        with path(64):
            sums, counts = _core.metrics_rows(
                x, y, ignore_index=-100, class_weight=None, sample_weight=None, top_k=1,
                clip_lo=0.0, clip_hi=30.0, edges=edges, n_threads=1, **out)
        nb = n_bins + 1
        conf32 = out["conf"].astype(np.float32)
        assert conf32[-2] == 1.0 and conf32[-1] == 0.5
        on_edge = np.isin(conf32, edges)
        assert edges is odd or on_edge.sum() >= (n_bins - 1) // 2     # the edges were hit
        bins = np.searchsorted(edges, conf32, side="right") - 1
        np.testing.assert_array_equal(counts[B:B + nb], np.bincount(bins, minlength=nb))
        np.testing.assert_array_equal(
            sums[5:], np.bincount(bins, weights=conf32.astype(np.float64), minlength=nb))


@pytest.mark.parametrize("c", [2, 10, 40, 200])
def test_loss_only(rng, dtype, c):
    """loss_only (the log loss's call): the loss sums and the kept count have the bits of
    the full call, on both paths; the hits and the bins are left 0."""
    n = 1000
    x = (rng.standard_normal((n, c)) * 3).astype(dtype)
    x[::7] *= 30                                     # confident rows: the clipping bites
    y = rng.integers(0, c, n)
    y[::9] = -100
    sw = rng.random(n)
    args = dict(ignore_index=-100, class_weight=None, sample_weight=sw, top_k=1,
                clip_lo=0.01, clip_hi=5.0, edges=metrics._bin_edges(N_BINS), n_threads=1)
    for items_max_c in (0, ITEMS):
        with path(items_max_c):
            s_full, c_full = _core.metrics_rows(x, y, **args)
            s_loss, c_loss = _core.metrics_rows(x, y, loss_only=True, **args)
        assert_same_bits(s_loss[:3], s_full[:3])
        assert s_loss[4] == s_full[4] and c_loss[0] == c_full[0] == np.count_nonzero(y >= 0)
        assert s_loss[3] == 0 and (s_loss[5:] == 0).all() and (c_loss[1:] == 0).all()  # hits, bad, bins
        assert c_full[1] > 0


@pytest.mark.parametrize("n_bins", [15, 100])
def test_items_bins_over_many_groups(rng, isa, n_bins):
    """Blocks of thousands of rows (the packed bin counters are flushed every 1024 rows),
    with bins on the stack (15) and in the caller's scratch (100): the bins' counts and
    confidence sums equal NumPy's searchsorted and bincount of the float32 confidences."""
    n, c = 5000, 10
    x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    x[::5] *= 20                                      # confidences of 1 among them
    y = rng.integers(0, c, n)
    y[::17] = -100
    edges = metrics._bin_edges(n_bins)
    out = dict(nll=np.empty(n), conf=np.empty(n), argmax=np.empty(n, np.int64),
               above=np.empty(n, np.int64))
    with path(64):
        sums, counts = _core.metrics_rows(
            x, y, ignore_index=-100, class_weight=None, sample_weight=None, top_k=1,
            clip_lo=0.0, clip_hi=30.0, edges=edges, n_threads=1, **out)
    nb = n_bins + 1
    kept = y >= 0
    conf32 = out["conf"].astype(np.float32)
    bins = np.searchsorted(edges, conf32, side="right") - 1
    right = kept & (np.argmax(x, axis=1) == y)
    assert counts.shape == (B + 2 * nb,) and (conf32[kept] == 1).sum() > 100
    np.testing.assert_array_equal(counts[B:B + nb], np.bincount(bins[kept], minlength=nb))
    np.testing.assert_array_equal(counts[B + nb:], np.bincount(bins[right], minlength=nb))
    np.testing.assert_array_equal(
        sums[5:], np.bincount(bins[kept], weights=conf32[kept].astype(np.float64), minlength=nb))


@pytest.mark.parametrize("c", [2, 3, 10, 33])
def test_items_top1_shortcut_equals_exact(rng, dtype, isa, c):
    """Without per-row outputs and with top_k = 1 the items kernel reads only whether the
    target is the unique max (ties at a target's max, NaN and inf rows take the exact
    loop): its sums and counts equal those of the exact call, whose argmax and ranks the
    tests above check against NumPy."""
    n = 700
    x = awkward_logits(rng, n, c, dtype)
    x[100:400] = (rng.standard_normal((300, c)) * 3).astype(dtype)   # groups without ties
    y = rng.integers(0, c, n)
    y[::13] = -100
    right = rng.random(n) < 0.7
    y[right] = np.argmax(x[right], axis=1)               # targets at the max, often tied
    with path(64):
        s_exact, c_exact, _ = run_kernel(x, y, top_k=1)
        s_fast, c_fast = _core.metrics_rows(
            x, y, ignore_index=-100, class_weight=None, sample_weight=None, top_k=1,
            clip_lo=0.05, clip_hi=4.0, edges=metrics._bin_edges(N_BINS), n_threads=1)
    np.testing.assert_array_equal(c_fast, c_exact)
    # The loss sum adds rows whose NaN is the input's (+NaN, rows 1 and 2) and rows whose
    # NaN an invalid operation made (inf - inf: x86's default NaN has the sign bit set,
    # rows 3 and 4); which sign the sum keeps is the first operand's of the add where
    # they meet, an order the compiler picks for each loop. NaN is compared as NaN.
    assert_same_bits(canonical_nan(s_fast), canonical_nan(s_exact))
    assert c_exact[1] > n // 4                           # many hits: the shortcut was taken


@pytest.mark.parametrize("c", [300, 5000])
def test_rows_top1_ties_at_the_max(rng, dtype, isa, c):
    """The row kernel's top-1 shortcut (no per-row outputs): a target at the row's max
    is a hit only if no higher class ties it (scikit-learn's order) and right only if no
    lower class does. Rows with S < 2 (one dominant max: no tie possible) skip the tie
    pass; rows with a tie (S >= 2) must take it. Accuracy and the calibration counts of
    right argmaxes against NumPy."""
    n = 400
    x = (rng.standard_normal((n, c)) * 3).astype(dtype)
    y = rng.integers(0, c, n)
    x[np.arange(n), y] = x.max(axis=1) + np.where(np.arange(n) % 2, 10.0, 0.5)  # S < 2, S >= 2
    tie = np.arange(n) % 5 == 0
    other = (y + 1 + rng.integers(0, c - 1, n)) % c
    x[tie, other[tie]] = x[tie, y[tie]]                  # a tie at the max, above or below
    x[[7, 8, 9]] = -np.inf                               # all tied, S = 0
    y[9] = c - 1                                         # the one hit among them
    acc = metrics.evaluate(x, y, n_bins=N_BINS)
    with np.errstate(invalid="ignore"):
        hit = np.array([reference_rank(x[i].astype(np.float64), y[i]) == 0 for i in range(n)])
    assert not hit[[7, 8]].any() and hit[9]
    assert acc.accuracy == hit.mean()
    assert 0 < (tie & hit).sum() < tie.sum()              # ties both ways were met
    m = metrics.MetricsAccumulator(n_bins=N_BINS).update(x, y)
    right = np.argmax(x, axis=1) == y
    assert m.counts[B + N_BINS + 1:].sum() == right.sum()
