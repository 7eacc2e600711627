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
from collections.abc import Iterator

import torch

__all__ = ["ImageRNG", "hash32", "hash32_int"]

_MASK = 0xFFFFFFFF
_M1 = 0x21F0AAAD
_M2 = 0x735A2D97
_GOLDEN = 0x9E3779B9
#: Elements per chunk of the CPU hash (256 KiB of int32: with its scratch, in L2 cache).
_CHUNK_ELEMS = 1 << 16


def _to_i32(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) -> the int32 tensor with the same 32 bits."""
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Mix int64 values in [0, 2**32) to well-scrambled int64 values in [0, 2**32)."""
    return _hash32_(_to_i32(x)).to(torch.int64) & _MASK


def _hash32_(x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """The hash, in place on an int32 tensor (wrapping products, logical shifts); t: scratch like x."""
    if t is None:
        t = torch.empty_like(x)
    torch.bitwise_right_shift(x, 16, out=t)
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

    def word_chunks(self, stream: int, m: int) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(r0, r1, words): the (r1 - r0, m) int32 hash words of rows r0:r1 (all 32 bits random).

        Why chunks: the hash is ~20 in-place passes; on CPU, over blocks of rows
        that fit in L2 cache they run ~2.5x faster than over the whole batch.
        The yielded buffer is reused: consume it before the next step.
        """
        ka, kb = self._keys(stream)
        e = torch.arange(m, dtype=torch.int32, device=self.device).unsqueeze(0)
        rows = max(1, _CHUNK_ELEMS // max(m, 1)) if self.device.type == "cpu" else max(self.n, 1)
        buf = torch.empty(min(rows, self.n), m, dtype=torch.int32, device=self.device)
        tmp = torch.empty_like(buf)
        for r0 in range(0, self.n, rows):
            r1 = min(self.n, r0 + rows)
            h, t = buf[: r1 - r0], tmp[: r1 - r0]
            torch.add(e, ka[r0:r1].unsqueeze(1), out=h)
            _hash32_(h, t)
            h ^= kb[r0:r1].unsqueeze(1)
            yield r0, r1, _hash32_(h, t)

    def bits(self, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
        """(N, *shape) int64 uniform on [0, 2**32)."""
        m = math.prod(shape)
        out = torch.empty(self.n, m, dtype=torch.int64, device=self.device)
        for r0, r1, h in self.word_chunks(stream, m):
            o = out[r0:r1]
            o.copy_(h)
            o &= _MASK
        return out.reshape(self.n, *shape)

    def _words_at(self, stream: int, rows: torch.Tensor, elems: torch.Tensor) -> torch.Tensor:
        """The int32 hash words of `word_chunks(stream, m)` at (rows, elems), without drawing the rest."""
        ka, kb = self._keys(stream)
        h = ka.index_select(0, rows)
        h += elems.to(torch.int32)
        t = torch.empty_like(h)
        _hash32_(h, t)
        h ^= kb.index_select(0, rows)
        return _hash32_(h, t)

    def bits_at(self, stream: int, rows: torch.Tensor, elems: torch.Tensor) -> torch.Tensor:
        """`bits(stream, shape).reshape(N, -1)[rows, elems]` without drawing the rest."""
        return self._words_at(stream, rows, elems).to(torch.int64) & _MASK

    def uniform_at(self, stream: int, rows: torch.Tensor, elems: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`uniform(stream, shape).reshape(N, -1)[rows, elems]`."""
        b = self._words_at(stream, rows, elems)
        b >>= 8
        b &= 0xFFFFFF
        u = b.to(dtype)
        u += 0.5
        u *= 1.0 / (1 << 24)
        return u

    def _uniform_into(self, stream: int, out: torch.Tensor) -> Iterator[tuple[int, int]]:
        """Fill `out` (N, m) float chunk by chunk with uniforms on (0, 1) (24-bit grid); yields (r0, r1) after each."""
        for r0, r1, b in self.word_chunks(stream, out.shape[1]):
            b >>= 8
            b &= 0xFFFFFF
            u = out[r0:r1]
            u.copy_(b)
            u += 0.5
            u *= 1.0 / (1 << 24)
            yield r0, r1

    def uniform(self, stream: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, *shape) uniform on the open interval (0, 1), 24-bit resolution."""
        out = torch.empty(self.n, math.prod(shape), dtype=dtype, device=self.device)
        for _ in self._uniform_into(stream, out):
            pass
        return out.reshape(self.n, *shape)

    def normal(self, stream: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, *shape) standard normal by Box-Muller (both outputs used), chunk by chunk of rows."""
        m = math.prod(shape)
        half = (m + 1) // 2
        u = torch.empty(self.n, 2 * half, dtype=dtype, device=self.device)
        z = torch.empty(self.n, 2 * half, dtype=dtype, device=self.device)
        for r0, r1 in self._uniform_into(stream, u):
            u1, u2 = u[r0:r1, :half], u[r0:r1, half:]
            r, t = z[r0:r1, half:], u2
            torch.log(u1, out=r)
            r *= -2.0
            r.sqrt_()
            t *= 2.0 * math.pi
            torch.cos(t, out=u1)
            torch.sin(t, out=u2)
            torch.mul(r, u1, out=z[r0:r1, :half])
            r *= u2
        return z[:, :m].reshape(self.n, *shape)

    def randint(self, stream: int, shape: tuple[int, ...], low: int, high: int) -> torch.Tensor:
        """(N, *shape) int64 uniform on [low, high) (as numpy's randint)."""
        span = high - low
        return (self.bits(stream, shape) * span >> 32) + low
