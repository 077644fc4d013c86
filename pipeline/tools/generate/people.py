"""Stores and the hidden customers: the population every record is drawn from."""

from __future__ import annotations

import polars as pl

from pipeline.tools.generate.options import Options
from pipeline.tools.generate.rng import Rng, _choose, _pick

CONCEPTS = {"HYPER": 15, "SUPER": 45, "EXPRESS": 32, "ONLINE": 8}  # share of stores
ZONES = 12
STORE_BASE = 50_679_700


def stores(opts: Options) -> pl.DataFrame:
    """One store per ~400 customers (20 to 2000), zones 1..12, concepts by share, and a
    popularity weight (Pareto) used to pick stores; ONLINE stores are few but popular."""
    rng = Rng(opts.seed)
    n = min(2_000, max(20, opts.customers // 400))
    k = pl.int_range(n, dtype=pl.Int64)
    frame = pl.select(_k=k).with_columns(
        store_id=(pl.col("_k") + STORE_BASE + 1).cast(pl.String),
        zone_id=pl.format("Z{}", (rng.below(pl.col("_k"), 1, ZONES) + 1).cast(pl.String)
                          .str.zfill(2)),
        concept_id=_choose(list(CONCEPTS), _pick(list(CONCEPTS.values()),
                                                   rng.uniform(pl.col("_k"), 2))),
        _weight=(1.0 - rng.uniform(pl.col("_k"), 3)).pow(-1 / 1.3).clip(upper_bound=40.0),
    )
    return frame.with_columns(
        name=pl.format("Store {} ({} {})", pl.col("_k") + 1, pl.col("zone_id"),
                       pl.col("concept_id").str.to_titlecase()),
        _weight=pl.when(pl.col("concept_id") == "ONLINE").then(pl.col("_weight") * 3)
        .otherwise(pl.col("_weight")),
    ).drop("_k")


def customers(opts: Options, store_frame: pl.DataFrame) -> pl.DataFrame:
    """The hidden customer table the records are drawn from (not an export)."""
    rng = Rng(opts.seed)
    cid = pl.int_range(1, opts.customers + 1, dtype=pl.Int64)
    store_cum = (store_frame["_weight"] / store_frame["_weight"].sum()).cum_sum()
    store_cum[-1] = 1.0
    c = pl.col("customer_id")
    return pl.select(customer_id=cid).with_columns(
        # Pareto activity (alpha 1.4): the top 1% shop ~10x more often than the median.
        _activity=(1.0 - rng.uniform(c, 10)).pow(-1 / 1.4).clip(upper_bound=60.0),
        _app_activity=(1.0 - rng.uniform(c, 11)).pow(-1 / 1.6).clip(upper_bound=40.0)
        * (rng.uniform(c, 12) < 0.6).cast(pl.Float64),
        _spend=(0.45 * rng.normal(c, 13)).exp(),
        _home=pl.lit(store_cum).search_sorted(rng.uniform(c, 14), side="right")
        .clip(upper_bound=store_frame.height - 1).cast(pl.Int64),
        _signup=pl.when(rng.uniform(c, 15) < 0.7).then(pl.lit(0, pl.Int64))
        .otherwise(rng.below(c, 16, opts.days - 14)),
    )
