"""fastxent: fast fused cross-entropy losses and their gradients over NumPy arrays.

The loss functions take ``torch.nn.functional``'s names, arguments and semantics; the
building blocks take NumPy's (``axis=-1``). Every loss accepts ``return_grad=True`` to get
``(loss, grad)`` from one pass over the logits, ``grad_out=`` (``grad_out=input`` writes
the gradient over the logits) and ``n_threads=``.

Inputs: float32, float64 (computed natively), float16 and ml_dtypes' bfloat16 (widened to
float32 in registers; the loss a ``np.float32``, the gradient and the building blocks'
outputs in the input's dtype, rounded once from float32, or unrounded into a float32
``grad_out=`` / ``out=``; float16 turns a mean-reduced gradient below 6e-5 subnormal or 0:
use ``reduction="sum"`` or a float32 ``grad_out`` there). See the README's
"Half-precision logits".
"""
import os as _os
from typing import Any as _Any, Dict as _Dict

from . import _core
from . import partials   # the engine-neutral softmax partials (NumPy only)
from ._blocks import entropy, log_sigmoid, log_softmax, logsumexp, sigmoid, softmax
from ._losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    kl_div,
    nll_loss,
)
from . import metrics  # evaluation metrics from logits (NumPy only, as the rest)

__version__ = "0.1.0"

__all__ = [
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "kl_div",
    "logsumexp",
    "log_softmax",
    "softmax",
    "entropy",
    "sigmoid",
    "log_sigmoid",
    "show_config",
]

if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_core._after_fork_in_child)


def show_config() -> _Dict[str, _Any]:
    """How this fastxent was built and what it will use.

    Keys: ``version``; ``isa`` (the kernel variant in use: 'avx512', 'avx2' or
    'baseline', picked at import from what the CPU supports); ``isa_available``;
    ``openmp`` (False for a serial build); ``max_threads`` (threads a call with
    ``n_threads=None`` uses now: OpenMP's default, honouring ``OMP_NUM_THREADS`` and
    threadpoolctl); ``forked_serial`` (True in a forked child, which runs serially: GNU
    OpenMP hangs a child whose parent used it, through fastxent or any other library).
    """
    return {
        "version": __version__,
        "isa": _core.current_isa(),
        "isa_available": _core.isa_available(),
        "openmp": _core.have_openmp(),
        "max_threads": _core.default_threads(),
        "forked_serial": _core.forked_serial(),
    }
