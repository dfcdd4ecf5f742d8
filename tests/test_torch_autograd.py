"""fastxent.torch: the drop-in losses and modules on torch tensors, with autograd.

gradcheck in float64 over every loss and option; opcheck of each custom op; parity with
torch.nn.functional in float32 (losses and gradients, strided logits, int32 targets); the
errors; a small model trained with the drop-in module against torch's module; and
torch.compile(fullgraph=True). Expected numbers come from torch itself (or from finite
differences, in gradcheck), never from fastxent.

On CI (CI=true) a missing torch is a failure (require_torch), elsewhere a skip.
"""
import copy
import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import require_torch

torch = require_torch()
F = torch.nn.functional
import fastxent.torch as fxt  # noqa: E402  (after require_torch: it imports torch)

REDUCTIONS = ("none", "mean", "sum")
LOSS_NAMES = ("cross_entropy", "nll_loss", "binary_cross_entropy_with_logits",
              "binary_cross_entropy", "kl_div")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tests use tiny tensors: with torch's OpenMP threads on a loaded machine its own
    ops take milliseconds each (barrier waits), so the file runs torch (and, through
    torch.get_num_threads(), fastxent.torch) on one thread; threads are tested elsewhere."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# the losses through which gradcheck, parity and opcheck iterate: (name, make(shape, dtype,
# gen) -> (input, target, kwargs)); kwargs hold every option, tensors made by gen


def _ce_cases():
    """cross_entropy: layouts (unbatched, (N, C), (N, C, d)) x index / probability targets
    x class weights x ignore_index x label smoothing."""
    for shape, soft, weighted, ignore, ls in itertools.product(
            ((5,), (4, 5), (2, 5, 3)), (False, True), (False, True), (False, True), (0.0, 0.2)):
        if soft and ignore:
            continue  # PyTorch rejects ignore_index with probability targets
        cid = f"{shape}-soft{soft:d}-w{weighted:d}-ign{ignore:d}-ls{ls}"
        yield cid, shape, soft, weighted, ignore, ls


def _ce_args(shape, soft, weighted, ignore, ls, dtype, gen):
    C = 5
    x = torch.randn(shape, dtype=dtype, generator=gen) * 2
    if soft:
        y = torch.softmax(torch.randn(shape, dtype=dtype, generator=gen),
                          dim=0 if len(shape) == 1 else 1)
    else:
        y = torch.randint(0, C, shape[:1] + shape[2:] if len(shape) > 1 else (), generator=gen)
        if ignore and y.dim():
            y.view(-1)[::3] = 2
            y.view(-1)[1] = 0
    kw = {"label_smoothing": ls}
    if weighted:
        kw["weight"] = torch.rand(C, dtype=dtype, generator=gen) + 0.2
    if ignore:
        kw["ignore_index"] = 2
    return x, y, kw


def _nll_cases():
    for shape, weighted, ignore in itertools.product(((5,), (4, 5), (2, 5, 3)), (False, True),
                                                     (False, True)):
        yield f"{shape}-w{weighted:d}-ign{ignore:d}", shape, weighted, ignore


def _nll_args(shape, weighted, ignore, dtype, gen):
    x, y, kw = _ce_args(shape, False, weighted, ignore, 0.0, dtype, gen)
    kw.pop("label_smoothing")
    return torch.log_softmax(x, dim=0 if len(shape) == 1 else 1), y, kw


def _bce_logits_args(shape, weighted, pos_weighted, dtype, gen):
    x = torch.randn(shape, dtype=dtype, generator=gen) * 2
    y = torch.rand(shape, dtype=dtype, generator=gen)
    kw = {}
    if weighted:  # broadcast along the rows
        kw["weight"] = torch.rand(shape[-1:], dtype=dtype, generator=gen) + 0.2
    if pos_weighted:
        kw["pos_weight"] = torch.rand(shape[-1:], dtype=dtype, generator=gen) * 3
    return x, y, kw


def _bce_args(shape, weighted, dtype, gen):
    x = torch.rand(shape, dtype=dtype, generator=gen) * 0.9 + 0.05
    y = torch.rand(shape, dtype=dtype, generator=gen)
    kw = {"weight": torch.rand(shape, dtype=dtype, generator=gen) + 0.2} if weighted else {}
    return x, y, kw


def _kl_args(shape, log_target, dtype, gen):
    x = torch.log_softmax(torch.randn(shape, dtype=dtype, generator=gen), dim=-1)
    p = torch.softmax(torch.randn(shape, dtype=dtype, generator=gen), dim=-1)
    return x, (p.log() if log_target else p), {"log_target": log_target}


def _all_cases():
    """(id, fastxent function, torch function, make(dtype, gen), reductions)."""
    for cid, *a in _ce_cases():
        yield (f"ce-{cid}", fxt.cross_entropy, F.cross_entropy,
               lambda dt, g, a=a: _ce_args(*a, dt, g), REDUCTIONS)
    for cid, *a in _nll_cases():
        yield (f"nll-{cid}", fxt.nll_loss, F.nll_loss,
               lambda dt, g, a=a: _nll_args(*a, dt, g), REDUCTIONS)
    for shape, w, pw in itertools.product(((6,), (3, 4)), (False, True), (False, True)):
        yield (f"bcel-{shape}-w{w:d}-pw{pw:d}", fxt.binary_cross_entropy_with_logits,
               F.binary_cross_entropy_with_logits,
               lambda dt, g, a=(shape, w, pw): _bce_logits_args(*a, dt, g), REDUCTIONS)
    for shape, w in itertools.product(((6,), (3, 4)), (False, True)):
        yield (f"bce-{shape}-w{w:d}", fxt.binary_cross_entropy, F.binary_cross_entropy,
               lambda dt, g, a=(shape, w): _bce_args(*a, dt, g), REDUCTIONS)
    for log_target in (False, True):
        yield (f"kl-log_target{log_target:d}", fxt.kl_div, F.kl_div,
               lambda dt, g, lt=log_target: _kl_args((3, 4), lt, dt, g),
               REDUCTIONS + ("batchmean",))


CASES = [(cid, fx_fn, t_fn, make, red) for cid, fx_fn, t_fn, make, reds in _all_cases()
         for red in reds]
IDS = [f"{c[0]}-{c[4]}" for c in CASES]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------ gradcheck
@pytest.mark.parametrize("cid,fx_fn,t_fn,make,reduction", CASES, ids=IDS)
def test_gradcheck_float64(cid, fx_fn, t_fn, make, reduction):
    x, y, kw = make(torch.float64, _gen())
    x.requires_grad_(True)
    # finite differences of fastxent's own loss against the gradient of its fused kernel;
    # with reduction='none', gradcheck also feeds per-item incoming gradients
    assert torch.autograd.gradcheck(lambda a: fx_fn(a, y, reduction=reduction, **kw), (x,))


# ------------------------------------------------------------------ parity in float32
def _torch_and_fastxent(fx_fn, t_fn, x, y, kw, reduction, upstream_seed=1):
    out = []
    for fn in (t_fn, fx_fn):
        a = x.detach().clone().requires_grad_(True) if x.is_contiguous() else x
        if a is x:  # a strided view: keep its layout, make it a leaf of its own
            a = x.detach().requires_grad_(True)
        loss = fn(a, y, reduction=reduction, **kw)
        g = torch.randn(loss.shape, dtype=loss.dtype, generator=_gen(upstream_seed))
        loss.backward(g)
        out.append((loss.detach(), a.grad))
    return out


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")  # torch's kl_div
@pytest.mark.parametrize("cid,fx_fn,t_fn,make,reduction", CASES, ids=IDS)
def test_parity_float32(cid, fx_fn, t_fn, make, reduction):
    x, y, kw = make(torch.float32, _gen(3))
    (l_t, g_t), (l_f, g_f) = _torch_and_fastxent(fx_fn, t_fn, x, y, kw, reduction)
    assert l_f.dtype == l_t.dtype and l_f.shape == l_t.shape
    assert g_f.dtype == g_t.dtype and g_f.shape == g_t.shape
    # float32 on both sides: a few ulps of exp/log per element, and summation order
    torch.testing.assert_close(l_f, l_t, rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(g_f, g_t, rtol=2e-5, atol=2e-6)


def test_strided_logits_and_int32_targets_read_without_copy(monkeypatch):
    """A transposed and a sliced logits tensor and int32 targets: the arrays fastxent is
    handed share the tensors' memory, and the results are torch's."""
    gen = _gen(5)
    base = torch.randn(10, 12, generator=gen)
    seen = []
    real = fxt._array

    def spy(t, name, float_only=False):
        a = real(t, name, float_only)
        if t is not None:
            seen.append((name, np.shares_memory(a, t.detach().numpy())))
        return a

    monkeypatch.setattr(fxt, "_array", spy)
    for x in (base.t(), base[::2, 1:].t()):   # (12, 10) column-major; a strided slice
        y = torch.randint(0, x.shape[1], x.shape[:1], generator=gen)
        assert not x.is_contiguous()
        for target in (y, y.to(torch.int32)):
            seen.clear()
            xl = x.detach().requires_grad_(True)
            loss = fxt.cross_entropy(xl, target, label_smoothing=0.1)
            loss.backward()
            assert seen == [("input", True), ("target", True)]
            xt = x.detach().clone().requires_grad_(True)
            F.cross_entropy(xt, y, label_smoothing=0.1).backward()
            expected = F.cross_entropy(xt.detach(), y, label_smoothing=0.1)
            torch.testing.assert_close(loss.detach(), expected, rtol=2e-6, atol=0)
            torch.testing.assert_close(xl.grad, xt.grad, rtol=2e-5, atol=1e-7)


def test_gradient_of_the_forward_is_input_grad(monkeypatch):
    """loss.backward(): the gradient buffer written in the forward pass becomes input.grad
    (no multiply by the incoming 1, no copy); an incoming scale multiplies it in place."""
    buffers = []   # data pointers only: a reference kept here would make autograd copy
    real = fxt._grad_buffer

    def spy(input, need_grad):
        buf = real(input, need_grad)
        buffers.append(buf.data_ptr())
        return buf

    monkeypatch.setattr(fxt, "_grad_buffer", spy)
    x = torch.randn(16, 7, requires_grad=True)
    y = torch.randint(0, 7, (16,))
    fxt.cross_entropy(x, y).backward()
    assert x.grad.data_ptr() == buffers[-1]
    expected = x.grad.clone() * 3
    x.grad = None
    (3 * fxt.cross_entropy(x, y)).backward()
    assert x.grad.data_ptr() == buffers[-1]
    torch.testing.assert_close(x.grad, expected)


def test_no_gradient_computed_without_grad():
    x = torch.randn(6, 4)
    y = torch.randint(0, 4, (6,))
    loss = fxt.cross_entropy(x, y)
    assert loss.grad_fn is None
    with torch.no_grad():
        assert fxt.cross_entropy(x.requires_grad_(True), y).grad_fn is None
    torch.testing.assert_close(loss, F.cross_entropy(x.detach(), y))


def test_retain_graph_second_backward_recomputes():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (5,))
    loss = fxt.cross_entropy(x, y, reduction="none")
    g = torch.arange(5, dtype=torch.float64)
    first, = torch.autograd.grad(loss, x, g, retain_graph=True)
    second, = torch.autograd.grad(loss, x, 2 * g)
    xt = x.detach().requires_grad_(True)
    expected, = torch.autograd.grad(F.cross_entropy(xt, y, reduction="none"), xt, g)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, 2 * expected)


# ------------------------------------------------------------------------ opcheck
def _op_samples():
    g = _gen(7)
    x = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    x3 = torch.randn(2, 5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (4,), generator=g)
    y3 = torch.randint(0, 5, (2, 3), generator=g)
    w = torch.rand(5, dtype=torch.float64, generator=g) + 0.1
    p = torch.softmax(torch.randn(4, 5, dtype=torch.float64, generator=g), 1)
    lp = torch.log_softmax(x.detach(), 1).requires_grad_(True)
    ops = torch.ops.fastxent
    for red, need in itertools.product(REDUCTIONS, (True, False)):
        yield ops.cross_entropy.default, (x, y, w, 1, red, 0.1, need)
        yield ops.cross_entropy.default, (x3, y3, None, -100, red, 0.0, need)
        yield ops.cross_entropy.default, (x, p, None, -100, red, 0.2, need)
        yield ops.nll_loss.default, (lp, y.to(torch.int32), w, 2, red, need)
        yield ops.binary_cross_entropy_with_logits.default, (x, p, w, w * 2, red, need)
        probs = torch.sigmoid(x.detach()).requires_grad_(True)
        yield ops.binary_cross_entropy.default, (probs, p, None, red, need)
    for red in REDUCTIONS + ("batchmean",):
        yield ops.kl_div.default, (lp, p, red, False, True)
        yield ops.kl_div.default, (lp, p.log(), red, True, True)


@pytest.mark.parametrize("op,args", list(_op_samples()),
                         ids=lambda v: v.name() if hasattr(v, "name") else "")
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


# ------------------------------------------------------------------------ errors
def test_other_device_is_a_value_error_naming_it():
    x = torch.empty(4, 3, device="meta")
    with pytest.raises(ValueError, match="on device meta.*CPU only"):
        fxt.cross_entropy(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="target is on device meta"):
        fxt.binary_cross_entropy_with_logits(torch.zeros(3), torch.empty(3, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64])
def test_unsupported_dtype_is_named(dtype):
    x = torch.zeros(4, 3, dtype=dtype)
    with pytest.raises(TypeError, match=f"input has dtype {dtype}"):
        fxt.cross_entropy(x, torch.zeros(4, dtype=torch.long))


def test_bfloat16_target_is_named():
    with pytest.raises(TypeError, match="target has dtype torch.bfloat16"):
        fxt.binary_cross_entropy_with_logits(torch.zeros(3), torch.zeros(3, dtype=torch.bfloat16))


def test_double_backward_is_refused_clearly():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (4,))
    g, = torch.autograd.grad(fxt.cross_entropy(x, y), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        g.pow(2).sum().backward()


def test_target_that_requires_grad_is_refused():
    x = torch.randn(4, 3, requires_grad=True)
    p = torch.softmax(torch.randn(4, 3, requires_grad=True), 1)
    with pytest.raises(RuntimeError, match="target requires grad.*target.detach"):
        fxt.kl_div(torch.log_softmax(x, 1), p)
    # detached, it works and gives torch's number
    torch.testing.assert_close(fxt.kl_div(torch.log_softmax(x, 1), p.detach(), reduction="sum"),
                               F.kl_div(torch.log_softmax(x, 1), p.detach(), reduction="sum"))


def test_fastxent_checks_still_apply():
    x = torch.randn(4, 3)
    with pytest.raises(IndexError, match="out of range for 3 classes"):
        fxt.cross_entropy(x, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        fxt.cross_entropy(x, torch.tensor([0, 1, 2, 0]), reduction="avg")


# ------------------------------------------------------------------------ modules
MODULES = [
    (fxt.CrossEntropyLoss, torch.nn.CrossEntropyLoss,
     dict(weight=torch.tensor([1.0, 2.0, 0.5]), ignore_index=1, label_smoothing=0.1)),
    (fxt.NLLLoss, torch.nn.NLLLoss, dict(weight=torch.tensor([1.0, 2.0, 0.5]), reduction="sum")),
    (fxt.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss,
     dict(pos_weight=torch.tensor([2.0, 1.0, 0.5]), reduction="none")),
    (fxt.BCELoss, torch.nn.BCELoss, dict(weight=torch.tensor([1.0, 2.0, 0.5]))),
    (fxt.KLDivLoss, torch.nn.KLDivLoss, dict(reduction="batchmean", log_target=True)),
]


@pytest.mark.parametrize("fx_cls,t_cls,kw", MODULES, ids=lambda v: getattr(v, "__name__", ""))
def test_modules_are_drop_ins(fx_cls, t_cls, kw):
    ours, theirs = fx_cls(**kw), t_cls(**kw)
    assert isinstance(ours, t_cls)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    g = _gen(11)
    x = torch.randn(6, 3, generator=g)
    if t_cls in (torch.nn.NLLLoss, torch.nn.KLDivLoss):
        x = torch.log_softmax(x, 1)
    if t_cls is torch.nn.BCELoss:
        x = torch.sigmoid(x)
    if t_cls in (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss):
        y = torch.randint(0, 3, (6,), generator=g)
    elif t_cls is torch.nn.KLDivLoss:
        y = torch.log_softmax(torch.randn(6, 3, generator=g), 1)
    else:
        y = torch.rand(6, 3, generator=g)
    results = []
    for m in (theirs, ours):
        a = x.clone().requires_grad_(True)
        loss = m(a, y)
        loss.sum().backward()
        results.append((loss.detach(), a.grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=2e-5, atol=2e-6)


def test_training_follows_torchs_loss_trajectory():
    """A small MLP trained 30 SGD steps with fastxent.torch.CrossEntropyLoss follows the loss
    trajectory of the same model trained with torch.nn.CrossEntropyLoss (float64: both
    losses and gradients agree to ~1e-15 per step, and the trajectories to ~1e-12)."""
    g = _gen(13)
    X = torch.randn(128, 20, dtype=torch.float64, generator=g)
    Y = torch.randint(0, 10, (128,), generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10)).double()
    trajectories = []
    for criterion in (torch.nn.CrossEntropyLoss(label_smoothing=0.05),
                      fxt.CrossEntropyLoss(label_smoothing=0.05)):
        m = copy.deepcopy(model)
        losses = []
        for step in range(30):
            batch = slice(32 * (step % 4), 32 * (step % 4 + 1))
            m.zero_grad()
            loss = criterion(m(X[batch]), Y[batch])
            loss.backward()
            with torch.no_grad():  # plain SGD (torch.optim's first step costs seconds of imports)
                for prm in m.parameters():
                    prm -= 1.0 * prm.grad
            losses.append(loss.item())
        trajectories.append(losses)
    theirs, ours = map(np.array, trajectories)
    assert theirs[-1] < 0.6 * theirs[0]   # it trains
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)


# ------------------------------------------------------------------------ torch.compile
def test_compile_fullgraph_inductor():
    """torch.compile(fullgraph=True) with the default backend (Inductor) of a function
    that calls two losses: forward and gradient equal torch's eager ones."""
    torch._dynamo.reset()

    def step(fn_ce, fn_kl, x, y, teacher):
        logits = x * 2
        return fn_ce(logits, y, label_smoothing=0.1) + fn_kl(
            torch.log_softmax(logits, 1), teacher, reduction="batchmean")

    compiled = torch.compile(lambda *a: step(fxt.cross_entropy, fxt.kl_div, *a), fullgraph=True)
    g = _gen(17)
    x = torch.randn(8, 5, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (8,), generator=g)
    teacher = torch.softmax(torch.randn(8, 5, generator=g), 1)
    loss = compiled(x, y, teacher)
    loss.backward()
    xt = x.detach().clone().requires_grad_(True)
    expected = step(F.cross_entropy, F.kl_div, xt, y, teacher)
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(x.grad, xt.grad, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_compile_fullgraph_each_loss(name):
    """Each loss through torch.compile(fullgraph=True) (backend aot_eager: Dynamo and
    AOTAutograd trace the custom op and its autograd; no C++ compile, to keep it quick)."""
    torch._dynamo.reset()
    g = _gen(19)
    x = torch.randn(6, 4, dtype=torch.float64, generator=g)
    y = {"cross_entropy": torch.randint(0, 4, (6,), generator=g),
         "nll_loss": torch.randint(0, 4, (6,), generator=g)}.get(
        name, torch.rand(6, 4, dtype=torch.float64, generator=g))
    log_probs = lambda a: torch.log_softmax(a, 1)  # noqa: E731
    prep = {"nll_loss": log_probs, "kl_div": log_probs,
            "binary_cross_entropy": torch.sigmoid}.get(name, lambda a: a)
    fx_fn, t_fn = getattr(fxt, name), getattr(F, name)
    compiled = torch.compile(lambda a, t: fx_fn(prep(a), t, reduction="sum"), fullgraph=True,
                             backend="aot_eager")
    a = x.clone().requires_grad_(True)
    loss = compiled(a, y)
    loss.backward()
    b = x.clone().requires_grad_(True)
    expected = t_fn(prep(b), y, reduction="sum")
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach())
    torch.testing.assert_close(a.grad, b.grad)


# ------------------------------------------------------------------------ README
def test_readme_pytorch_blocks_run():
    """The README's ```python torch blocks run as written (test_readme.py runs the others)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python torch\n(.*?)^```", text, flags=re.S | re.M)
    assert blocks
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md python torch block", "exec"), namespace)
        assert namespace["logits"].grad is not None


def test_export_keeps_the_custom_op():
    """torch.export of a module using the drop-in: the graph calls fastxent::cross_entropy,
    and the exported program computes torch's loss."""
    torch.manual_seed(23)

    class Head(torch.nn.Module):
        def __init__(self, criterion):
            super().__init__()
            self.linear, self.criterion = torch.nn.Linear(3, 5), criterion

        def forward(self, x, y):
            return self.criterion(self.linear(x), y)

    ours = Head(fxt.CrossEntropyLoss(label_smoothing=0.1))
    x, y = torch.randn(4, 3), torch.randint(0, 5, (4,))
    program = torch.export.export(ours, (x, y))
    assert "fastxent.cross_entropy" in program.graph_module.code
    theirs = Head(torch.nn.CrossEntropyLoss(label_smoothing=0.1))
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(program.module()(x, y), theirs(x, y))


def test_second_backward_needs_the_input_alive_and_unchanged():
    """The eager path keeps the logits by a weak reference (not alive until backward through
    the loss, as torch's loss does not keep them): a second backward then needs them."""
    lin = torch.nn.Linear(3, 4)
    y = torch.randint(0, 4, (5,))
    loss = fxt.cross_entropy(lin(torch.randn(5, 3)), y)   # the logits: referenced nowhere
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="no longer alive: keep a reference"):
        loss.backward()
    x = torch.randn(5, 4, requires_grad=True)
    logits = x * 1.0
    loss = fxt.cross_entropy(logits, y)
    loss.backward(retain_graph=True)
    with torch.no_grad():
        logits.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place after the forward"):
        loss.backward()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_signatures_are_torchs(name):
    """The same parameters, in the same order, with the same kinds and defaults as
    torch.nn.functional's, and the deprecated size_average / reduce resolved as torch does."""
    import inspect
    ours = inspect.signature(getattr(fxt, name)).parameters
    theirs = inspect.signature(getattr(F, name)).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == \
        [(p.name, p.kind, p.default) for p in theirs.values()]


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
def test_legacy_reduction_arguments():
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))
    for kw in ({"size_average": False}, {"reduce": False}, {"size_average": True, "reduce": True}):
        torch.testing.assert_close(fxt.cross_entropy(x, y, **kw), F.cross_entropy(x, y, **kw))
