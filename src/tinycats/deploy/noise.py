"""Portable Gaussian noise: the same numbers from a seed in Python and in the browser.

torch.randn cannot be reproduced in JavaScript, so the web demo and the Python
onnxruntime path that it is tested against both draw their starting noise from this
generator (site/noise.mjs is the same algorithm): value i comes from two 32-bit hashes
of its index (Chris Wellons' lowbias32), turned into a normal by Box-Muller in doubles.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint32(0x9E3779B9)


def _lowbias32(x: np.ndarray) -> np.ndarray:
    """An integer hash, a bijection on uint32 (multiplications wrap modulo 2**32)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def portable_normal(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 values of `shape` for `seed` (0 <= seed < 2**32)."""
    count = int(np.prod(shape))
    key = _lowbias32(np.asarray([seed], dtype=np.uint32) ^ _GOLDEN)
    index = np.arange(2 * count, dtype=np.uint64).astype(np.uint32)
    bits = _lowbias32(_lowbias32(index) ^ key).astype(np.float64)
    u1 = (bits[0::2] + 1.0) / 2.0**32  # (0, 1]
    u2 = bits[1::2] / 2.0**32  # [0, 1)
    values = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return values.astype(np.float32).reshape(shape)
