"""Counter-based random numbers for corruptions, in torch integer ops.

Why counter-based: the corruption of an image must be the same however the data
set is batched, and the same on CPU and CUDA. Every random number is a pure
function of (seed, corruption, severity, stream, image id, element index): a
32-bit integer hash (Wellons' "hash prospector" xorshift-multiply design) of
that tuple, so a batch is generated in one vectorized pass with no generator
state. The hash runs on int32 tensors (4-8x faster than int64 on CPU): it
relies on int32 multiplication and addition wrapping modulo 2**32 (two's
complement, as every torch backend computes them); right shifts are masked to
be logical. `hash32_int` is the plain-Python reference the tests hold it to.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ImageRNG", "hash32", "hash32_int"]

_MASK = 0xFFFFFFFF
_M1 = 0x21F0AAAD
_M2 = 0x735A2D97
_GOLDEN = 0x9E3779B9


def _to_i32(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) -> the int32 tensor with the same 32 bits."""
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Mix int64 values in [0, 2**32) to well-scrambled int64 values in [0, 2**32)."""
    return _hash32_(_to_i32(x)).to(torch.int64) & _MASK


def _hash32_(x: torch.Tensor) -> torch.Tensor:
    """The hash, in place on an int32 tensor (wrapping products, logical shifts)."""
    t = x >> 16
    t &= 0xFFFF
    x ^= t
    x *= _M1
    torch.bitwise_right_shift(x, 15, out=t)
    t &= 0x1FFFF
    x ^= t
    x *= _M2
    torch.bitwise_right_shift(x, 15, out=t)
    t &= 0x1FFFF
    x ^= t
    return x


def hash32_int(x: int) -> int:
    """Plain-Python twin of `hash32` (reference for tests, scalar key folding)."""
    x &= _MASK
    x ^= x >> 16
    x = (x * _M1) & _MASK
    x ^= x >> 15
    x = (x * _M2) & _MASK
    return x ^ (x >> 15)


def _fold(*parts: int) -> int:
    h = 0x6A09E667
    for p in parts:
        p = int(p) & 0xFFFFFFFFFFFFFFFF
        h = hash32_int(h ^ (p & _MASK))
        h = hash32_int(h ^ (p >> 32) ^ _GOLDEN)
    return h


class ImageRNG:
    """Independent random streams per image of a batch.

    `key` = (seed, corruption index, severity); `image_ids` (N,) int64 name the
    images. `stream` separates the random fields one corruption draws (e.g. the
    x and y displacements of the elastic transform).
    """

    def __init__(self, seed: int, kind_index: int, severity: int, image_ids: torch.Tensor) -> None:
        self.base = _fold(seed, kind_index, severity)
        ids = image_ids.to(torch.int64)
        self.ids_lo = ids & _MASK
        self.ids_hi = (ids >> 32) & _MASK
        self.device = image_ids.device
        self.n = int(ids.shape[0])

    def _keys(self, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two int32 keys per image for `stream`."""
        s = _fold(self.base, stream)
        ka = hash32(hash32(self.ids_lo ^ s) ^ self.ids_hi)
        kb = hash32(ka ^ _GOLDEN)
        return _to_i32(ka), _to_i32(kb)

    def _bits32(self, stream: int, m: int) -> torch.Tensor:
        """(N, m) int32 hash words (all 32 bits random)."""
        ka, kb = self._keys(stream)
        e = torch.arange(m, dtype=torch.int32, device=self.device)
        h = e.unsqueeze(0) + ka.unsqueeze(1)
        _hash32_(h)
        h ^= kb.unsqueeze(1)
        return _hash32_(h)

    def bits(self, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
        """(N, *shape) int64 uniform on [0, 2**32)."""
        h = self._bits32(stream, math.prod(shape)).to(torch.int64)
        h &= _MASK
        return h.reshape(self.n, *shape)

    def bits_at(self, stream: int, rows: torch.Tensor, elems: torch.Tensor) -> torch.Tensor:
        """`bits(stream, shape).reshape(N, -1)[rows, elems]` without drawing the rest."""
        ka, kb = self._keys(stream)
        h = elems.to(torch.int32) + ka[rows]
        _hash32_(h)
        h ^= kb[rows]
        return _hash32_(h).to(torch.int64) & _MASK

    def uniform_at(self, stream: int, rows: torch.Tensor, elems: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`uniform(stream, shape).reshape(N, -1)[rows, elems]`."""
        return ((self.bits_at(stream, rows, elems) >> 8).to(dtype) + 0.5) * (1.0 / (1 << 24))

    def uniform(self, stream: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, *shape) uniform on the open interval (0, 1), 24-bit resolution."""
        b = self._bits32(stream, math.prod(shape))
        b >>= 8
        b &= 0xFFFFFF
        u = b.to(dtype)
        u += 0.5
        u *= 1.0 / (1 << 24)
        return u.reshape(self.n, *shape)

    def normal(self, stream: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, *shape) standard normal by Box-Muller (both outputs used)."""
        m = math.prod(shape)
        half = (m + 1) // 2
        u = self.uniform(stream, (2, half), dtype)
        r = torch.sqrt(-2.0 * torch.log(u[:, 0]))
        t = (2.0 * math.pi) * u[:, 1]
        z = torch.cat([r * torch.cos(t), r * torch.sin(t)], dim=1)[:, :m]
        return z.reshape(self.n, *shape)

    def randint(self, stream: int, shape: tuple[int, ...], low: int, high: int) -> torch.Tensor:
        """(N, *shape) int64 uniform on [low, high) (as numpy's randint)."""
        span = high - low
        return (self.bits(stream, shape) * span >> 32) + low
