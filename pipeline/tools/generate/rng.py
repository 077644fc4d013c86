"""Seeded per-row random numbers as polars expressions: the same tables on any machine."""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

import polars as pl

MONEY = pl.Decimal(18, 2)

_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """SplitMix64's finaliser in Python, for per-column constants."""
    x = (x + _GOLDEN) & _MASK
    x = ((x ^ (x >> 30)) * _M1) & _MASK
    x = ((x ^ (x >> 27)) * _M2) & _MASK
    return x ^ (x >> 31)


def _u64(value: int) -> pl.Expr:
    return pl.lit(value, pl.UInt64)


class Rng:
    """Seeded per-row random numbers as polars expressions; `salt` names an independent stream.

    ``rng.uniform(key, salt)`` is a function of (seed, salt, key) only, so a value does not
    depend on how many rows were drawn before it or on the thread count.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def bits(self, key: pl.Expr, salt: int) -> pl.Expr:
        # (key * golden + c) * M1, folded into one multiply-add (mod 2^64), then SplitMix64's
        # xor-shift-multiply rounds.
        c = _mix(self.seed * 1_000_003 + salt)
        z = key.cast(pl.UInt64, wrap_numerical=True) * _u64((_GOLDEN * _M1) & _MASK)
        z = z + _u64((c * _M1) & _MASK)
        z = z ^ z.floordiv(_u64(1 << 31))
        z = z * _u64(_M2)
        return z ^ z.floordiv(_u64(1 << 29))

    def uniform(self, key: pl.Expr, salt: int) -> pl.Expr:
        """In [0, 1), 53 bits."""
        return self.bits(key, salt).floordiv(_u64(1 << 11)).cast(pl.Float64) / float(1 << 53)

    def below(self, key: pl.Expr, salt: int, n: int | pl.Expr) -> pl.Expr:
        """An integer in [0, n)."""
        return (self.uniform(key, salt) * n).floor().cast(pl.Int64)

    def normal(self, key: pl.Expr, salt: int) -> pl.Expr:
        """Standard normal (Box-Muller)."""
        u1 = 1.0 - self.uniform(key, salt)
        u2 = self.uniform(key, salt + 7_919)
        return (-2.0 * u1.log()).sqrt() * (2.0 * math.pi * u2).cos()

    def with_uniforms(self, frame: pl.DataFrame, key: str, salt: int, names: Sequence[str]
                      ) -> pl.DataFrame:
        """`frame` plus one uniform column in [0, 1) per name, 16 bits each: four columns
        share one hash, which is what makes 20 million rows cheap. Enough resolution for
        every choice made with them (drawing customers uses `uniform`)."""
        hashes = {f"_h{i}": self.bits(pl.col(key), salt + i) for i in range(-(-len(names) // 4))}
        frame = frame.with_columns(**hashes)
        parts = {
            name: (pl.col(f"_h{i // 4}").floordiv(_u64(1 << (16 * (i % 4)))) % (1 << 16))
            .cast(pl.Float64) / 65_536.0
            for i, name in enumerate(names)
        }
        return frame.with_columns(**parts).drop(list(hashes))


def _pick(weights: Sequence[float], u: pl.Expr) -> pl.Expr:
    """Index of a weighted choice for a uniform `u` (inverse CDF by binary search)."""
    total = float(sum(weights))
    cum, acc = [], 0.0
    for w in weights:
        acc += w
        cum.append(acc / total)
    cum[-1] = 1.0
    return pl.lit(pl.Series(cum)).search_sorted(u, side="right").cast(pl.Int64)


def _choose(values: Sequence[str], index: pl.Expr) -> pl.Expr:
    return pl.lit(pl.Series(list(values), dtype=pl.String)).gather(index)


def _money(cents: pl.Expr) -> pl.Expr:
    """Integer cents -> exact Decimal(18, 2)."""
    return (cents.cast(pl.Decimal(18, 0)) * pl.lit(Decimal("0.01"), MONEY)).cast(MONEY)
