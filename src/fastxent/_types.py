"""The types of fastxent's public signatures (for type checkers; nothing here runs).

* inputs are anything ``np.asarray`` takes (``numpy.typing.ArrayLike``); the functions
  reject at run time what is not float32/float64 (inputs) or integer/float (targets);
* a loss is a NumPy scalar of the input's dtype (``"mean"``, ``"sum"``) or an array
  shaped like the items (``"none"``): ``Loss``; with ``return_grad=True`` a tuple
  ``(Loss, FloatArray)``, the gradient shaped like the input.
"""
from __future__ import annotations

from typing import Any, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.floating[Any]]
Loss = Union[np.floating[Any], FloatArray]
LossAndGrad = Tuple[Loss, FloatArray]

__all__ = ["ArrayLike", "FloatArray", "Loss", "LossAndGrad"]
