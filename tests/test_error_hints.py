"""Error messages name the object's type and the fix that fits it.

A torch tensor is recognised without importing torch: the message says what it is (requires
grad, on which device, of which dtype) and the expression that makes a NumPy array of it
(``.detach()``, ``.cpu()``, ``.float()``, ``.numpy()``); a NumPy array of the wrong dtype is
told ``.astype(np.float32)``, a list ``np.asarray(..., dtype=np.float32)``. The stand-in
classes below carry just what the messages read, so these tests run without torch; the last
test checks real tensors (torch is required on CI).
"""
import subprocess
import sys

import numpy as np
import pytest

import fastxent as fx
from conftest import require_torch


class _Device:
    def __init__(self, kind, index=None):
        self.type = kind
        self.index = index

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"


def _fake_tensor(dtype="torch.float32", requires_grad=False, device="cpu", fail=True,
                 array_dtype=np.int32):
    """A class whose module is torch.*, as torch.Tensor's is; np.asarray of it raises as
    torch's does for a tensor that requires grad or lives on a GPU (``fail``), else gives
    zeros of ``array_dtype``."""
    def __array__(self, dtype=None, copy=None):
        if fail:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad.")
        return np.zeros((4, 3), array_dtype)

    cls = type("Tensor", (), {"__module__": "torch", "__array__": __array__,
                              "detach": lambda self: self})
    t = cls()
    t.dtype, t.requires_grad = dtype, requires_grad
    t.device = _Device(*device.split(":")) if ":" in device else _Device(device)
    return t


Y = np.array([0, 1, 2, 0])


def _message(exc, fn, *args, **kw):
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    return str(info.value)


def test_torch_tensor_that_requires_grad_is_told_detach_numpy():
    msg = _message(TypeError, fx.cross_entropy, _fake_tensor(requires_grad=True), Y)
    assert "input is a torch.Tensor that requires grad" in msg
    assert "input.detach().numpy()" in msg
    assert "return_grad=True" in msg and "fastxent.torch" in msg
    assert "float32 or float64" not in msg   # its dtype is fine: the message must not blame it


def test_torch_tensor_on_a_gpu_of_half_precision_is_told_each_step():
    t = _fake_tensor(dtype="torch.bfloat16", requires_grad=True, device="cuda:0")
    msg = _message(TypeError, fx.softmax, t)
    assert "x is a torch.Tensor that requires grad, on cuda:0, of dtype torch.bfloat16" in msg
    assert "x.detach().cpu().float().numpy()" in msg
    assert "no copy" not in msg              # .cpu() and .float() copy


def test_torch_tensor_of_int32_is_told_float_not_astype():
    msg = _message(TypeError, fx.cross_entropy, _fake_tensor("torch.int32", fail=False), Y)
    assert "got dtype int32" in msg
    assert "input.float().numpy()" in msg
    assert "astype" not in msg


@pytest.mark.parametrize("arg", ["target", "weight"])
def test_torch_target_and_weight_keep_their_dtype(arg):
    x = np.zeros((4, 3), np.float32)
    t = _fake_tensor("torch.int64" if arg == "target" else "torch.float32", requires_grad=True)
    args = (x, t) if arg == "target" else (x, Y, t)
    msg = _message(TypeError, fx.cross_entropy, *args)
    assert f"{arg}.detach().numpy()" in msg and "float()" not in msg
    assert "return_grad" not in msg          # no gradient flows to a target or a weight


def test_torch_grad_out_is_told_numpy_view():
    x = np.zeros((4, 3), np.float32)
    msg = _message(ValueError, fx.cross_entropy, x, Y, return_grad=True,
                   grad_out=_fake_tensor())
    assert "got torch.Tensor" in msg and "grad_out.numpy()" in msg


@pytest.mark.parametrize("dtype,cast", [(np.uint16, "np.float32"), (np.int64, "np.float32"),
                                        (np.longdouble, "np.float64")])
def test_numpy_array_of_another_dtype_is_told_astype(dtype, cast):
    if np.dtype(dtype) == np.float64:   # longdouble is float64 on some platforms
        pytest.skip("longdouble is float64 here")
    msg = _message(TypeError, fx.cross_entropy, np.zeros((4, 3), dtype), Y)
    assert f"got dtype {np.dtype(dtype)}" in msg
    assert f"input.astype({cast})" in msg


def test_list_of_ints_is_told_asarray():
    msg = _message(TypeError, fx.log_softmax, [[1, 2], [3, 4]])
    assert "got dtype int64" in msg or "got dtype int32" in msg
    assert "from a list" in msg and "np.asarray(x, dtype=np.float32)" in msg


def test_ragged_list_names_its_type():
    msg = _message(TypeError, fx.sigmoid, [[1.0, 2.0], [3.0]])
    assert "x must be an array of float32, float64, float16 or bfloat16, got list" in msg


def test_real_torch_tensors():
    torch = require_torch()
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    msg = _message(TypeError, fx.cross_entropy, x, y)
    assert "input.detach().numpy()" in msg
    msg = _message(TypeError, fx.cross_entropy, x.detach().to(torch.int32), y)
    assert "input.float().numpy()" in msg
    # a float16 tensor's numpy() is an input (float16 is computed natively)
    assert fx.cross_entropy(x.detach().half().numpy(), y.numpy()).dtype == np.float32
    # the advice works: the same call on what it says to pass gives PyTorch's loss
    torch_loss = torch.nn.functional.cross_entropy(x, y).item()
    assert fx.cross_entropy(x.detach().numpy(), y.numpy()) == pytest.approx(torch_loss, rel=1e-6)


def test_messages_do_not_import_torch():
    code = ("import sys, numpy as np, fastxent as fx\n"
            "try:\n    fx.cross_entropy(np.zeros((2, 2), np.int32), [0, 1])\n"
            "except TypeError as e:\n    print(e)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "False"
