"""fastxent.metrics (issue 16) against scikit-learn 1.9 and torchmetrics on the same data,
the kernel's per-row values against NumPy float64 references, and the accumulator's
streaming / merging against one-shot calls.

Expected numbers come from the other library (or a float64 NumPy reference), never from
fastxent itself, except where a test is about fastxent agreeing with itself (streaming
equals one-shot, thread counts, ISAs), which is then said.
"""
import json
import math
import warnings

import numpy as np
import pytest

import fastxent as fx
from fastxent import _core, metrics
from fastxent._cli import main as cli_main

from conftest import (
    assert_same_bits,
    require_ml_dtypes,
    require_sklearn,
    require_torch,
    require_torchmetrics,
    tol,
)


def softmax64(x):
    """float64 softmax over the last axis (the reference probabilities)."""
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def make_logits(rng, n, c, dtype, confident=True):
    """Logits with a share of confident misses: rows scaled by 60, whose target
    probability underflows, so that scikit-learn's clipping at eps decides the loss."""
    x = rng.standard_normal((n, c)) * 3
    if confident:
        x[: n // 5] *= 60
    return x.astype(dtype)


def sklearn_probs(x, dtype):
    """What scikit-learn's path is given: softmax(logits), in the logits' dtype (which
    sets its clipping epsilon)."""
    return softmax64(x).astype(dtype)


# ---------------------------------------------------------------------- log_loss
@pytest.mark.parametrize("c", [3, 10, 257])
def test_log_loss_matches_sklearn(rng, dtype, c):
    skm = require_sklearn().metrics
    n = 600
    x = make_logits(rng, n, c, dtype)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)                      # every class present (labels inferred)
    p = sklearn_probs(x, dtype)
    expected = skm.log_loss(y, p)
    got = metrics.log_loss(y, x)
    assert isinstance(got, float)
    # scikit-learn sums float32 logs of float32 probabilities: its own rounding is the
    # float32 tolerance; in float64 both are the same formula to a few ulps
    assert got == pytest.approx(expected, rel=tol(dtype))
    # the confident misses did hit the clipping: their loss is -log(eps)
    eps = np.finfo(dtype).eps
    first = metrics.log_loss(y[:n // 5], x[:n // 5], labels=np.arange(c))
    assert first == pytest.approx(skm.log_loss(y[:n // 5], p[:n // 5], labels=np.arange(c)),
                                  rel=tol(dtype))
    assert first > 0.5 * -math.log(eps)


def test_log_loss_sample_weight_normalize_labels(rng, dtype):
    skm = require_sklearn().metrics
    n, c = 400, 5
    x = make_logits(rng, n, c, dtype)
    y = rng.integers(0, c - 1, n)             # class 4 absent: labels= names it
    w = rng.random(n) * 3
    p = sklearn_probs(x, dtype)
    labels = np.arange(c)
    for normalize in (True, False):
        expected = skm.log_loss(y, p, labels=labels, sample_weight=w, normalize=normalize)
        got = metrics.log_loss(y, x, labels=labels, sample_weight=w, normalize=normalize)
        assert got == pytest.approx(expected, rel=tol(dtype))
    # string labels: columns follow np.unique order, as LabelBinarizer's
    names = np.array(["cat", "dog", "emu", "fox", "gnu"])
    ys = names[y]
    assert metrics.log_loss(ys, x, labels=names) == pytest.approx(
        skm.log_loss(ys, p, labels=names), rel=tol(dtype))


def test_log_loss_binary_1d_logits(rng, dtype):
    skm = require_sklearn().metrics
    n = 500
    z = (rng.standard_normal(n) * 4).astype(dtype)
    z[:50] *= 100                              # confident: clipped
    y = rng.integers(0, 2, n)
    with np.errstate(over="ignore"):                # exp(-z) = inf: p = 0, as it should
        p = (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(dtype)
    expected = skm.log_loss(y, p)
    # scikit-learn forms 1 - p in float32 for the negative class, which loses digits
    rel = 1e-4 if dtype == np.float32 else 1e-10
    assert metrics.log_loss(y, z) == pytest.approx(expected, rel=rel)
    assert metrics.log_loss(y, z[:, None]) == pytest.approx(expected, rel=rel)
    # labels of any kind: the greater one is positive
    yl = np.where(y == 1, "spam", "ham")
    assert metrics.log_loss(yl, z) == pytest.approx(skm.log_loss(yl, p), rel=rel)


def test_log_loss_errors():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="only one label"):
        metrics.log_loss([1, 1, 1, 1], np.zeros(4))
    with pytest.raises(ValueError, match="labels"):
        metrics.log_loss([0, 1, 1, 0], x)            # 2 labels, 3 columns
    with pytest.raises(ValueError, match="not in labels"):
        metrics.log_loss([0, 1, 5, 0], x, labels=[0, 1, 2])
    with pytest.raises(TypeError):
        metrics.log_loss([0, 1, 2, 0], x.astype(np.int64))


# ---------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("c", [3, 10, 40])
def test_accuracy_matches_top_k_accuracy_score_with_ties(rng, dtype, c):
    skm = require_sklearn().metrics
    n = 700
    # small integers: many ties, where the order of equal logits decides
    x = rng.integers(-2, 3, size=(n, c)).astype(dtype)
    y = rng.integers(0, c, n)
    w = rng.random(n)
    labels = np.arange(c)
    for k in range(1, min(c, 6)):
        assert metrics.accuracy(x, y, top_k=k) == skm.top_k_accuracy_score(y, x, k=k, labels=labels)
        assert metrics.accuracy(x, y, top_k=k, sample_weight=w) == pytest.approx(
            skm.top_k_accuracy_score(y, x, k=k, labels=labels, sample_weight=w), rel=1e-12)


def test_accuracy_ignore_index(rng):
    skm = require_sklearn().metrics
    n, c = 300, 6
    x = rng.standard_normal((n, c))
    y = rng.integers(0, c, n)
    y[::4] = -100
    kept = y != -100
    assert metrics.accuracy(x, y, top_k=2) == skm.top_k_accuracy_score(
        y[kept], x[kept], k=2, labels=np.arange(c))


def reference_rank(row, t):
    """Classes ranked above t in scikit-learn's order: NumPy's stable argsort reversed
    (NaN sorts last ascending, so first here)."""
    order = np.argsort(row, kind="mergesort")[::-1]
    return int(np.nonzero(order == t)[0][0])


@pytest.mark.parametrize("c", [5, 16, 33, 5000])
def test_kernel_rows_against_numpy(rng, dtype, isa, c):
    """Per row, the kernel's nll, confidence, argmax and rank against float64 NumPy, with
    ties, NaN, +-inf and all -inf rows; per ISA."""
    n = 64
    x = rng.integers(-3, 3, size=(n, c)).astype(dtype)
    x[1, c // 2] = np.nan
    x[2, [0, c - 1]] = np.nan
    x[3, c // 3] = np.inf
    x[4, :] = -np.inf
    x[5, :2] = -np.inf
    y = rng.integers(0, c, n)
    y[1] = c // 2                                   # a NaN target
    y[6] = -100
    # each path: the measured switch, the row path forced (0), the items path forced (64)
    for items_max_c in (-1, 0, _core.ITEMS_MAX_C):
        prev = _core._set_items_max_c(items_max_c)
        try:
            check_kernel_rows(x, y, dtype)
        finally:
            _core._set_items_max_c(prev)


def check_kernel_rows(x, y, dtype):
    n, c = x.shape
    nll, conf = np.empty(n), np.empty(n)
    am, above = np.empty(n, np.int64), np.empty(n, np.int64)
    _core.metrics_rows(x, y, ignore_index=-100, class_weight=None, sample_weight=None, top_k=1,
                       clip_lo=0.0, clip_hi=np.inf, edges=metrics._bin_edges(15), nll=nll,
                       conf=conf, argmax=am, above=above, n_threads=1)
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(am, np.argmax(x64, axis=1))
    for i in range(n):
        if y[i] == -100:
            assert above[i] == -1 and nll[i] == 0.0
            continue
        assert above[i] == reference_rank(x64[i], y[i]), i
    finite = np.isfinite(x64).all(axis=1)
    m = x64[finite].max(axis=1, keepdims=True)
    s = np.exp(x64[finite] - m).sum(axis=1)
    ref_nll = np.log(s) + m[:, 0] - x64[finite, np.where(y[finite] < 0, 0, y[finite])]
    keep = y[finite] >= 0
    np.testing.assert_allclose(nll[finite][keep], ref_nll[keep], rtol=tol(dtype), atol=tol(dtype))
    np.testing.assert_allclose(conf[finite], 1 / s, rtol=tol(dtype))
    assert np.isnan(conf[1]) and np.isnan(conf[4])
    # the nll of a kept row is cross_entropy's, bit for bit (the same formula and passes,
    # on the path the switch gives both)
    ce = fx.cross_entropy(x[finite], y[finite], reduction="none", axis=-1)
    assert_same_bits(nll[finite][keep].astype(dtype), ce[keep])


def test_thread_count_and_blocks_do_not_change_bits(rng):
    x = rng.standard_normal((70_000, 12)).astype(np.float32)
    y = rng.integers(0, 12, 70_000)
    a = metrics.evaluate(x, y, n_threads=1)
    b = metrics.evaluate(x, y, n_threads=2)
    assert a == b


# ---------------------------------------------------------------------- calibration
def test_bin_edges_are_torch_linspace():
    torch = require_torch()
    for n in list(range(1, 200)) + [255, 1000, 1023]:
        np.testing.assert_array_equal(metrics._bin_edges(n),
                                      torch.linspace(0, 1, n + 1).numpy(), err_msg=str(n))


@pytest.mark.parametrize("n_bins", [5, 15, 37])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_calibration_matches_torchmetrics(rng, n_bins, norm):
    torch = require_torch()
    tmc = require_torchmetrics().classification
    n, c = 3000, 7
    x = make_logits(rng, n, c, np.float64)    # confident rows: confidence 1 has its bin
    y = rng.integers(0, c, n)
    y[::9] = -100
    p = torch.from_numpy(softmax64(x))
    m = tmc.MulticlassCalibrationError(num_classes=c, n_bins=n_bins, norm=norm,
                                       ignore_index=-100)
    expected = float(m(p, torch.from_numpy(y)))
    got = metrics.calibration_error(x, y, n_bins=n_bins, norm=norm)
    # torchmetrics sums float32 confidences in float32
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_calibration_norm_error():
    with pytest.raises(ValueError, match="norm"):
        metrics.calibration_error(np.zeros((2, 3)), np.zeros(2, np.int64), norm="l3")


# ---------------------------------------------------------------------- perplexity
def test_perplexity_matches_torchmetrics(rng, dtype):
    torch = require_torch()
    tmt = require_torchmetrics().text
    b, s, v = 4, 50, 30
    x = (rng.standard_normal((b, s, v)) * 2).astype(dtype)
    y = rng.integers(0, v, (b, s))
    y[:, ::7] = -100
    expected = float(tmt.Perplexity(ignore_index=-100)(torch.from_numpy(x), torch.from_numpy(y)))
    assert metrics.perplexity(x, y) == pytest.approx(expected, rel=10 * tol(np.float32))


def test_perplexity_class_weights_against_torch(rng):
    torch = require_torch()
    n, c = 500, 9
    x = rng.standard_normal((n, c)) * 2
    y = rng.integers(0, c, n)
    y[::5] = -100
    w = rng.random(c) + 0.1
    ce = torch.nn.functional.cross_entropy(torch.from_numpy(x), torch.from_numpy(y),
                                           weight=torch.from_numpy(w), ignore_index=-100)
    assert metrics.perplexity(x, y, weight=w) == pytest.approx(math.exp(float(ce)), rel=1e-12)


def test_evaluate_class_axis_and_cross_entropy(rng, dtype):
    x = rng.standard_normal((6, 11, 5)).astype(dtype)      # (N, C, L): class axis 1
    y = rng.integers(0, 11, (6, 5))
    r = metrics.evaluate(x, y, axis=1)
    r_last = metrics.evaluate(np.moveaxis(x, 1, -1).copy(), y)
    assert r == r_last
    expected = float(fx.cross_entropy(x.astype(np.float64), y))
    assert r.cross_entropy == pytest.approx(expected, rel=tol(dtype))
    assert r.perplexity == pytest.approx(math.exp(r.cross_entropy), rel=1e-15)


# ---------------------------------------------------------------------- streaming
def test_streaming_equals_one_shot_and_merge_order_is_free(rng):
    n, c = 5000, 8
    x = make_logits(rng, n, c, np.float32)
    y = rng.integers(0, c, n)
    y[::13] = -100
    w = rng.random(n)
    cuts = np.sort(rng.choice(np.arange(1, n), 6, replace=False))
    parts = list(zip(np.split(x, cuts), np.split(y, cuts), np.split(w, cuts)))

    seq = metrics.MetricsAccumulator(top_k=2)
    for xb, yb, wb in parts:
        seq.update(xb, yb, sample_weight=wb)
    accs = [metrics.MetricsAccumulator(top_k=2).update(xb, yb, sample_weight=wb)
            for xb, yb, wb in parts]
    # merged as a tree, in a shuffled order: the same bits as in sequence (exact sums)
    order = rng.permutation(len(accs))
    left = accs[order[0]].copy()
    for i in order[1:4]:
        left.merge(accs[i])
    right = accs[order[4]].copy()
    for i in order[5:]:
        right.merge(accs[i])
    assert right.merge(left).compute() == seq.compute()
    # one batch: the accumulator is evaluate, bit for bit
    one = metrics.evaluate(x, y, top_k=2, sample_weight=w)
    assert metrics.MetricsAccumulator(top_k=2).update(x, y, sample_weight=w).compute() == one
    # other batches: the same metrics to rounding
    got = seq.compute()
    for f in ("cross_entropy", "log_loss", "accuracy", "ece", "rmsce", "mce"):
        assert getattr(got, f) == pytest.approx(getattr(one, f), rel=1e-12), f
    assert (got.n_items, got.n_kept) == (one.n_items, one.n_kept) == (n, int((y != -100).sum()))


def test_all_ignored_batches(rng):
    x = rng.standard_normal((20, 4))
    y = np.full(20, -100)
    r = metrics.evaluate(x, y)
    assert r.n_items == 20 and r.n_kept == 0
    for f in ("cross_entropy", "perplexity", "log_loss", "accuracy", "ece", "rmsce", "mce"):
        assert math.isnan(getattr(r, f)), f
    # an all-ignored batch adds nothing to the others
    y2 = rng.integers(0, 4, 20)
    a = metrics.MetricsAccumulator().update(x, y2)
    b = metrics.MetricsAccumulator().update(x, y2).update(x, y)
    ra, rb = a.compute(), b.compute()
    assert rb.n_items == 40 and rb.n_kept == ra.n_kept
    assert (rb.cross_entropy, rb.log_loss, rb.accuracy, rb.ece) == \
           (ra.cross_entropy, ra.log_loss, ra.accuracy, ra.ece)


def test_accumulator_rejects_mismatches(rng):
    a = metrics.MetricsAccumulator().update(np.zeros((2, 3), np.float32), [0, 1])
    with pytest.raises(ValueError, match="classes"):
        a.update(np.zeros((2, 4), np.float32), [0, 1])
    with pytest.raises(ValueError, match="dtype"):
        a.update(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="options"):
        a.merge(metrics.MetricsAccumulator(top_k=2))
    with pytest.raises(IndexError, match="out of range"):
        a.update(np.zeros((2, 3), np.float32), [0, 3])
    with pytest.raises(TypeError, match="integer"):
        a.update(np.zeros((2, 3), np.float32), [0.0, 1.0])
    with pytest.raises(TypeError, match="float32, float64, float16 or bfloat16"):
        metrics.evaluate(np.zeros((2, 3), np.int16), [0, 1])


# ---------------------------------------------------------------------- the command line
def test_cli_eval_npy_npz_and_blocks(rng, tmp_path, capsys):
    n, c = 3000, 6
    x = rng.standard_normal((n, c)).astype(np.float32)
    y = rng.integers(0, c, n)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "d.npz", logits=x, labels=y)
    expected = metrics.evaluate(x, y, top_k=3)

    assert cli_main(["eval", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json",
                     "--top-k", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_items"] == n and out["accuracy"] == expected.accuracy
    # streamed in blocks of 700 rows from the memory map: the same metrics to rounding
    assert cli_main(["eval", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json",
                     "--top-k", "3", "--block-rows", "700"]) == 0
    out = json.loads(capsys.readouterr().out)
    for f in ("cross_entropy", "log_loss", "accuracy", "ece"):
        assert out[f] == pytest.approx(getattr(expected, f), rel=1e-12), f
    assert cli_main(["eval", str(tmp_path / "d.npz"), "--top-k", "3"]) == 0
    text = capsys.readouterr().out
    assert "perplexity" in text and "accuracy" in text
    assert cli_main(["eval", str(tmp_path / "x.npy")]) == 2          # no labels
    capsys.readouterr()


def test_cli_eval_sequences_fortran_order_and_nothing_kept(rng, tmp_path, capsys):
    x = rng.standard_normal((5, 40, 7)).astype(np.float32)          # (batch, time, vocab)
    y = rng.integers(0, 7, (5, 40))
    y[1, :9] = -100
    np.save(tmp_path / "x.npy", np.asfortranarray(x))
    np.save(tmp_path / "y.npy", y)
    expected = metrics.evaluate(x, y)
    assert cli_main(["eval", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json",
                     "--block-rows", "90"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_kept"] == expected.n_kept == 191
    assert out["perplexity"] == pytest.approx(expected.perplexity, rel=1e-12)
    np.save(tmp_path / "y.npy", np.full((5, 40), -100))
    assert cli_main(["eval", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_kept"] == 0 and out["log_loss"] is None and out["perplexity"] is None


@pytest.mark.parametrize("case", ["offset", "offset-labels", "extra-label", "negative"])
def test_log_loss_integer_label_paths(rng, case):
    """The counting path (small non-negative integers) and the sorting path give
    scikit-learn's label handling."""
    skm = require_sklearn().metrics
    x = rng.standard_normal((80, 4))
    y, labels = {
        "offset": (rng.integers(3, 7, 80), None),
        "offset-labels": (rng.integers(3, 7, 80), [6, 4, 5, 3]),
        "extra-label": (rng.integers(0, 3, 80), [0, 1, 2, 9]),
        "negative": (rng.integers(-2, 2, 80), None),
    }[case]
    y[:4] = np.sort(np.unique(y))[:4] if labels is None else y[:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # its note on unordered labels
        expected = skm.log_loss(y, softmax64(x), labels=labels)
    assert metrics.log_loss(y, x, labels=labels) == pytest.approx(expected, rel=1e-12)


def test_accumulators_from_python_threads_merge_to_the_same_bits(rng):
    """Each Python thread fills its own accumulator (the kernel releases the GIL); merged
    in any order they give the bits of one accumulator fed the same batches."""
    from concurrent.futures import ThreadPoolExecutor

    batches = [(rng.standard_normal((3000, 10)).astype(np.float32), rng.integers(0, 10, 3000))
               for _ in range(8)]
    seq = metrics.MetricsAccumulator(top_k=3)
    for xb, yb in batches:
        seq.update(xb, yb)

    def work(i):
        acc = metrics.MetricsAccumulator(top_k=3)
        for xb, yb in batches[i::4]:
            acc.update(xb, yb, )
        return acc

    with ThreadPoolExecutor(4) as pool:
        accs = list(pool.map(work, range(4)))
    total = accs[3]
    for a in accs[:3]:
        total.merge(a)
    assert total.compute() == seq.compute()


def test_exact_sums_do_not_depend_on_order():
    """The accumulator's float sums are exact (math.fsum is the reference): any order and
    grouping of adds and merges gives the correctly rounded total."""
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.standard_normal(50) * 10.0 ** rng.integers(-20, 20, 50),
                             [1e16, 1.0, -1e16, 3e-300]])
    expected = math.fsum(values)
    for _ in range(5):
        order = rng.permutation(values.size)
        a, b = metrics._ExactSum(), metrics._ExactSum()
        for i in order[:30]:
            a.add(values[i])
        for i in order[30:]:
            b.add(values[i])
        b.merge(a)
        assert float(b.value()) == expected
    s = metrics._ExactSum((2,))
    s.add([np.inf, 1.0])
    s.add([1.0, np.nan])
    v = s.value()
    assert v[0] == np.inf and np.isnan(v[1])


@pytest.mark.parametrize("c", [5, 300])
def test_bad_label_found_after_the_pass(rng, c):
    """Labels are validated by the kernel's own pass: a bad one anywhere (on the items
    path, c = 5, and the row path, c = 300) raises IndexError naming it and its position,
    and leaves the accumulator as it was."""
    x = rng.standard_normal((2, 1000, c)).astype(np.float32)
    y = rng.integers(0, c, (2, 1000))
    acc = metrics.MetricsAccumulator().update(x, y)
    before = acc.compute()
    bad = y.copy()
    bad[1, 777] = c
    bad[1, 900] = -5
    with pytest.raises(IndexError, match=rf"target {c} at position \(1, 777\)"):
        acc.update(x, bad)
    assert acc.compute() == before and acc.n_items == 2000
    with pytest.raises(IndexError, match="out of range"):
        metrics.evaluate(x, bad)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("c", [10, 300])
def test_half_logits(rng, monkeypatch, half, c):
    """float16 / bfloat16 logits (widened to float32 a block of rows at a time; blocks of
    a few rows here, so that many are summed): every metric equals the float32 metric of
    the same values (counts exactly, sums to rounding), except that the log loss clips at
    the half dtype's eps, as scikit-learn does for probabilities of that dtype; checked
    against a float64 NumPy reference."""
    dt = np.dtype(require_ml_dtypes().bfloat16) if half == "bfloat16" else np.dtype(np.float16)
    monkeypatch.setattr(metrics, "_HALF_BLOCK_BYTES", 4 * c * 37)      # 37 rows a block
    n = 1000
    x = (rng.standard_normal((n, c)) * 4).astype(dt)
    x[::9] = (x[::9].astype(np.float32) * 8).astype(dt)                # confident rows
    y = rng.integers(0, c, n)
    y[::11] = -100
    sw = rng.random(n)
    x32 = x.astype(np.float32)
    a_half = metrics.MetricsAccumulator(top_k=2, n_bins=10).update(x, y, sample_weight=sw)
    a_32 = metrics.MetricsAccumulator(top_k=2, n_bins=10).update(x32, y, sample_weight=sw)
    np.testing.assert_array_equal(a_half.counts, a_32.counts)   # kept, hits, bins: exact
    got, want = a_half.compute(), a_32.compute()
    for k in ("cross_entropy", "accuracy", "ece", "rmsce", "mce"):
        np.testing.assert_allclose(getattr(got, k), getattr(want, k), rtol=1e-12, err_msg=k)
    # the log loss against float64, clipped at the half dtype's eps
    eps = float(np.finfo(np.float16).eps) if half == "float16" else 2.0 ** -7
    x64 = x32.astype(np.float64)
    p = np.exp(x64 - x64.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    kept = y >= 0
    pt = np.clip(p[np.arange(n), np.where(kept, y, 0)], eps, 1 - eps)
    ref = np.sum(sw[kept] * -np.log(pt[kept])) / sw[kept].sum()
    np.testing.assert_allclose(got.log_loss, ref, rtol=1e-6)
    ll = metrics.log_loss(y[kept], x[kept], sample_weight=sw[kept], labels=np.arange(c))
    np.testing.assert_allclose(ll, ref, rtol=1e-6)
    bad = y.copy()
    bad[700] = c                                          # found in a later block
    with pytest.raises(IndexError, match=rf"target {c} at position \(700,\)"):
        metrics.evaluate(x, bad)


def test_failed_update_changes_nothing_and_huge_perplexity():
    """(Found by review.) A first update that fails on a bad label leaves the accumulator
    empty: no class count or dtype recorded, so a later update of another shape and a
    merge work. A mean cross-entropy above log(float64 max) gives perplexity inf."""
    acc = metrics.MetricsAccumulator()
    with pytest.raises(IndexError):
        acc.update(np.zeros((2, 5)), np.array([0, 9]))
    assert (acc.classes, acc.dtype, acc.n_items) == (None, None, 0)
    acc.update(np.zeros((2, 3), np.float32), np.array([0, 1]))
    b = metrics.MetricsAccumulator().merge(acc)
    assert (b.classes, b.n_items) == (3, 2)
    r = metrics.evaluate(np.array([[0.0, -1000.0]]), np.array([1]))
    assert r.cross_entropy == 1000.0 and r.perplexity == math.inf


def test_cli_eval_into_a_closed_pipe(rng, tmp_path):
    """`fastxent eval ... --json | head -0`: the reader is gone before the output is
    written; the command stops quietly (no traceback) with SIGPIPE's status, 141."""
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", rng.standard_normal((50, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 4, 50))
    p = subprocess.Popen([sys.executable, "-m", "fastxent", "eval", str(tmp_path / "x.npy"),
                          str(tmp_path / "y.npy"), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                                     # no reader from the start
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
