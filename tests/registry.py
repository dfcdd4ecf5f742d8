"""The one registry of fastxent's functions, which the generic tests iterate over.

LOSSES[name] -> Loss      cross_entropy, nll_loss, binary_cross_entropy_with_logits,
                          binary_cross_entropy, kl_div
BLOCKS[name] -> Block     logsumexp, log_softmax, softmax, entropy, sigmoid, log_sigmoid
CASES[id]    -> Case      a valid call of one loss with a set of its options (weights,
                          ignored labels, smoothing, probability or bool targets, axis=-1...)

A Loss gives its fastxent call (``loss.fx``), its float64 reference (``loss.ref``, from
tests/reference.py; torch.nn.functional has the same name), and the arguments it takes:
the valid reductions, its keyword options, which of them are weight arrays, the target
kinds it accepts and whether it has a class axis; ``make_input`` / ``make_target`` /
``valid_call`` build valid arguments of any shape. A Block gives its fastxent call, its
reference, its torch counterpart, whether it takes an axis and whether it drops it. A Case
builds (input, target, kwargs) and calls fastxent or the reference with them.

Every loss also takes return_grad, grad_out and n_threads; every building block out= and
n_threads: they are not listed per function. test_core.test_registry_is_the_public_api
checks the registry against the functions' signatures.
"""

from dataclasses import dataclass, field

import numpy as np

import fastxent as fx
import reference as ref

REDUCTIONS = ("none", "mean", "sum")    # (conftest.REDUCTIONS; this module stands alone)
CALL_ONLY = ("return_grad", "grad_out", "n_threads", "out")   # not the reference's business


# ------------------------------------------------------------------------------ losses
class _Named:
    """A public function by its name: .fx is fastxent's, .ref the float64 reference's."""

    @property
    def fx(self):
        return getattr(fx, self.name)

    @property
    def ref(self):
        return getattr(ref, self.name)


@dataclass(frozen=True)
class Loss(_Named):
    name: str                 # fx.<name>, reference.<name>, torch.nn.functional.<name>
    input: str                # the values it is meant for: "logits", "log_probs" or "probs"
    targets: tuple            # accepted target kinds, the first one the default (see make_target)
    options: tuple            # keyword options besides reduction and the CALL_ONLY ones
    weights: tuple = ()       # the options that are weight arrays
    reductions: tuple = REDUCTIONS
    class_axis: bool = False  # softmax family: class axis `axis` (default 1; 0 for a 1-D input)

    def make_input(self, rng, shape, dtype, axis=1):
        """Valid input values of `shape`."""
        z = rng.standard_normal(shape) * 3
        if self.input == "logits":
            v = z
        elif self.input == "log_probs":
            v = ref.log_softmax(z, axis=self._cax(shape, axis)) if z.size else z
        else:
            v = rng.uniform(0.02, 0.98, shape)
        return np.asarray(v).astype(dtype)

    def make_target(self, rng, shape, dtype, kind=None, axis=1):
        """A valid target for an input of `shape`: "index" (int64 class indices shaped like
        the input without its class axis), "prob" (probabilities along the class axis, or
        along the last axis for kl_div), "log_prob" (their logs), "float" (in [0, 1]),
        "bool" or "uint8" (0/1)."""
        kind = self.targets[0] if kind is None else kind
        assert kind in self.targets, f"{self.name} takes no {kind!r} target"
        if kind == "index":
            cax = self._cax(shape, axis)
            item = shape[:cax] + shape[cax + 1:] if len(shape) > 1 else ()
            return np.asarray(rng.integers(0, max(shape[cax], 1), item), dtype=np.int64)
        if kind in ("prob", "log_prob"):
            cax = self._cax(shape, axis) if self.class_axis else -1
            p = (ref.softmax(rng.standard_normal(shape), axis=cax) if np.prod(shape) else
                 np.ones(shape))
            return (np.log(p) if kind == "log_prob" else p).astype(dtype)
        bits = rng.random(shape) < 0.5
        return {"float": rng.random(shape).astype(dtype), "bool": bits,
                "uint8": bits.astype(np.uint8)}[kind]

    def valid_call(self, rng, shape=(4, 3), dtype=np.float32):
        """(input, target) of a valid call with the default target kind."""
        return self.make_input(rng, shape, dtype), self.make_target(rng, shape, dtype)

    def _cax(self, shape, axis):
        return 0 if len(shape) <= 1 else axis % len(shape)


LOSSES = {loss.name: loss for loss in (
    Loss("cross_entropy", input="logits", targets=("index", "prob"),
         options=("weight", "ignore_index", "label_smoothing", "axis"), weights=("weight",),
         class_axis=True),
    Loss("nll_loss", input="log_probs", targets=("index",),
         options=("weight", "ignore_index", "axis"), weights=("weight",), class_axis=True),
    Loss("binary_cross_entropy_with_logits", input="logits", targets=("float", "bool", "uint8"),
         options=("weight", "pos_weight"), weights=("weight", "pos_weight")),
    Loss("binary_cross_entropy", input="probs", targets=("float", "bool", "uint8"),
         options=("weight",), weights=("weight",)),
    Loss("kl_div", input="log_probs", targets=("prob", "log_prob"),
         options=("log_target",), reductions=REDUCTIONS + ("batchmean",)),
)}


# ----------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class Block(_Named):
    name: str                 # fx.<name>, reference.<name>
    reduces: bool             # drops the axis (logsumexp, entropy)
    has_axis: bool            # takes axis= (default -1); sigmoid and log_sigmoid are elementwise
    torch: object = field(default=None, compare=False)   # (torch, tensor, axis) -> tensor

    def out_shape(self, shape, axis=-1):
        if not self.reduces:
            return tuple(shape)
        ax = axis % len(shape)
        return tuple(shape[:ax]) + tuple(shape[ax + 1:])

    def call_kw(self, axis):
        """The keyword arguments that select `axis` (none for the elementwise blocks)."""
        return {"axis": axis} if self.has_axis and axis is not None else {}


def _torch_entropy(torch, xt, axis):
    # torch.distributions.Categorical(logits=x).entropy(), along any axis, p log p = 0 at p = 0
    lp = torch.log_softmax(xt.double(), dim=axis)
    p = lp.exp()
    return -torch.where(p > 0, p * lp, torch.zeros_like(lp)).sum(dim=axis)


BLOCKS = {block.name: block for block in (
    Block("logsumexp", reduces=True, has_axis=True,
          torch=lambda torch, xt, axis: torch.logsumexp(xt, dim=axis)),
    Block("log_softmax", reduces=False, has_axis=True,
          torch=lambda torch, xt, axis: torch.log_softmax(xt, dim=axis)),
    Block("softmax", reduces=False, has_axis=True,
          torch=lambda torch, xt, axis: torch.softmax(xt, dim=axis)),
    Block("entropy", reduces=True, has_axis=True, torch=_torch_entropy),
    Block("sigmoid", reduces=False, has_axis=False,
          torch=lambda torch, xt, axis: torch.sigmoid(xt)),
    Block("log_sigmoid", reduces=False, has_axis=False,
          torch=lambda torch, xt, axis: torch.nn.functional.logsigmoid(xt)),
)}

LOSS_NAMES = tuple(LOSSES)
BLOCK_NAMES = tuple(BLOCKS)


# ------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class Case:
    """A valid call of `loss` with some of its options.

    make(rng, dtype, shape=None) -> (input, target, kwargs); `options(rng, x, t)` returns
    the option kwargs (and may mark items of the fresh target t as ignored)."""
    id: str
    loss: Loss
    target: str
    shape: tuple
    options: object = field(default=None, compare=False)
    axis: int = None          # class axis for the softmax family (None: the default, 1)
    label_dtype: object = None

    def make(self, rng, dtype, shape=None):
        shape = self.shape if shape is None else tuple(shape)
        axis = 1 if self.axis is None else self.axis
        x = self.loss.make_input(rng, shape, dtype, axis)
        t = self.loss.make_target(rng, shape, dtype, self.target, axis)
        kw = {} if self.options is None else self.options(rng, x, t)
        if self.label_dtype is not None:
            t = t.astype(self.label_dtype)
        if self.axis is not None:
            kw["axis"] = self.axis
        return x, t, kw

    @property
    def reductions(self):
        return self.loss.reductions

    def fx(self, x, t, kw, **more):
        return self.loss.fx(x, t, **kw, **more)

    def ref(self, x, t, kw, **more):
        """The float64 reference for the same call: (loss, grad)."""
        args = {k: v for k, v in {**kw, **more}.items() if k not in CALL_ONLY}
        return self.loss.ref(x, t, **args)

    def loss_scale(self, x, t, kw, reduction):
        """The yardstick of a reduced loss's error (close_ieee's scale=): kl_div's terms
        have both signs, so its sum or mean is compared relative to the sum of their
        magnitudes (divided like the loss); None (relative to itself) for the others."""
        if self.loss.name != "kl_div" or reduction == "none":
            return None
        items = self.ref(x, t, kw, reduction="none")[0]
        return np.abs(items).sum() / {"sum": 1, "mean": x.size, "batchmean": x.shape[0]}[reduction]


def _ignore_some(t, every=5, index=-100):
    if t.ndim:
        t.reshape(-1)[::every] = index
    return {"ignore_index": index} if index != -100 else {}


def _class_weight(rng, x, axis=1):
    C = x.shape[axis % x.ndim] if x.ndim > 1 else x.shape[0]
    return rng.uniform(0.5, 2.0, C).astype(x.dtype)


CE, NLL = LOSSES["cross_entropy"], LOSSES["nll_loss"]
BCEL, BCE, KL = (LOSSES["binary_cross_entropy_with_logits"], LOSSES["binary_cross_entropy"],
                 LOSSES["kl_div"])

CASES = {case.id: case for case in (
    Case("ce-index", CE, "index", (6, 5, 3), label_dtype=np.int32,
         options=lambda rng, x, t: {**_ignore_some(t), "weight": _class_weight(rng, x),
                                    "label_smoothing": 0.1}),
    Case("ce-plain", CE, "index", (9, 7)),
    Case("ce-prob", CE, "prob", (6, 5, 3),
         options=lambda rng, x, t: {"weight": _class_weight(rng, x), "label_smoothing": 0.1}),
    Case("ce-axis-last", CE, "index", (4, 3, 7), axis=-1),
    Case("nll", NLL, "index", (6, 5), label_dtype=np.uint16,
         options=lambda rng, x, t: {**_ignore_some(t, 4, 3), "weight": _class_weight(rng, x)}),
    Case("bce-logits", BCEL, "float", (5, 4),
         options=lambda rng, x, t: {"weight": rng.uniform(0.5, 2, x.shape).astype(x.dtype),
                                    "pos_weight": rng.uniform(0.5, 3, x.shape[-1]).astype(x.dtype)}),
    Case("bce-logits-bool", BCEL, "bool", (5, 4),
         options=lambda rng, x, t: {"weight": rng.uniform(0.5, 2, x.shape[-1]).astype(x.dtype)}),
    Case("bce", BCE, "float", (5, 4),
         options=lambda rng, x, t: {"weight": rng.uniform(0.5, 2, x.shape).astype(x.dtype)}),
    Case("kl", KL, "prob", (5, 4)),
    Case("kl-log-target", KL, "log_prob", (5, 4), options=lambda rng, x, t: {"log_target": True}),
)}

# every loss has at least one case
assert {c.loss.name for c in CASES.values()} == set(LOSSES)
