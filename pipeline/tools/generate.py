"""`milestones generate`: synthetic but realistic exports of every kind, and a programme of groups.

Why: scale claims need data at any size that behaves like a retailer's, and tests need the same
data twice. Everything is a pure function of the options: the pseudo-random numbers are a
SplitMix64-style hash of (row, seed, column) computed with polars integer expressions, so the
output is identical on every machine and polars version, and nothing loops over rows in Python
(numpy is not a dependency). Floats only ever *pick* values; money, quantities and points are
integer cents turned into exact decimals.

What makes it realistic:

- customers: Pareto activity (a few daily shoppers, a long tail of occasional ones), a
  log-normal spend level, a home store, a sign-up day (30% join during the period), 60% app users;
- bills: weekend-heavy (weekly seasonality) and daytime-heavy, 75% at the home store, 1 to 5
  line items with categories, brands, rates, quantities and discounts; the bill is the sum of
  its lines; online stores give ``channel = ONLINE``;
- returns (~3%): two thirds take back one line of an earlier bill (``parent_txn_id``, negative
  amounts, one return line), one third have no parent (half of them carry a line);
- events: AppOpen, AddToCart (``cart_value``), ProductReview (``rating``), spinTheWheel
  (``points``), StoreCheckIn (``store_id``), Referral;
- points: REGULAR (1 per unit spent, per bill) and PROMOTIONAL (bonus on ~12% of bills);
- stores with zones and concepts; enrolments for the IMPORT groups, with personal goals,
  target values, opening balances and un-enrolments.

`programme` returns group bodies (POST v3/targetGroups) covering every tracking type, window kind
and measure, dated to the generated period. Files are written so `milestones load KIND` takes
them, in time order and in chunks (``transactions-0001.parquet``...), so that loading them one
by one in name order never meets a return before its bill.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.errors import InputError, UsageError

Progress = Callable[[str], None]

FORMATS = ("parquet", "csv")
# File stem -> `milestones load` kind, in the order they must be loaded.
KIND_FILES = {
    "stores": "stores",
    "transactions": "transactions",
    "line_items": "line-items",
    "events": "events",
    "points": "points",
    "enrolments": "enrolments",
}
RECORD_TABLES = ("transactions", "line_items", "events", "points")
CHUNK_ROWS = 1_000_000
DEFAULT_START = date(2025, 1, 1)
BILLS_PER_CUSTOMER_DAY = 0.055  # ~20 bills a year per customer
MANIFEST = "manifest.json"
MONEY = pl.Decimal(18, 2)

# Category -> (share of lines, typical price in cents, item-code prefix).
CATEGORIES = {
    "GROCERY": (30, 350, "G"),
    "DAIRY": (14, 250, "D"),
    "BAKERY": (12, 300, "B"),
    "DRINKS": (12, 400, "K"),
    "HOME": (8, 1_500, "H"),
    "BEAUTY": (8, 1_200, "Y"),
    "TOYS": (5, 2_500, "T"),
    "GARDEN": (4, 2_000, "N"),
    "CLOTHING": (4, 3_000, "C"),
    "ELECTRONICS": (3, 8_000, "E"),
}
BRANDS = ["HOUSE", "ACME", "NORDA", "VELLA", "KORU", "BRISA", "MONTE", "LUMO"]
CONCEPTS = {"HYPER": 15, "SUPER": 45, "EXPRESS": 32, "ONLINE": 8}  # share of stores
ZONES = 12
STORE_BASE = 50_679_700
# Event name -> share of events.
EVENTS = {
    "AppOpen": 45,
    "AddToCart": 22,
    "spinTheWheel": 12,
    "ProductReview": 8,
    "StoreCheckIn": 9,
    "Referral": 4,
}
EVENTS_PER_BILL = 0.5


@dataclass(frozen=True)
class Options:
    """What to generate. `transactions` None: ~20 bills per customer per 365 days."""

    customers: int
    days: int
    seed: int = 1
    transactions: int | None = None
    start: date = DEFAULT_START

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise UsageError(f"--customers {self.customers}: give at least 1 customer")
        if not 28 <= self.days <= 3_000:
            raise UsageError(f"--days {self.days}: give between 28 and 3000 days")
        if self.transactions is not None and self.transactions < 10:
            raise UsageError(f"--transactions {self.transactions}: give at least 10")

    @property
    def bills(self) -> int:
        """Transactions in total (bills and returns)."""
        if self.transactions is not None:
            return self.transactions
        return max(10, round(self.customers * self.days * BILLS_PER_CUSTOMER_DAY))

    @property
    def last_day(self) -> date:
        return self.start + timedelta(days=self.days - 1)


@dataclass(frozen=True)
class Generated:
    """A generated folder: its files per kind in load order, group files, row counts."""

    folder: Path
    options: Options
    files: dict[str, list[Path]]  # load kind -> files
    groups: list[Path]
    rows: dict[str, int]  # table -> rows
    seconds: float = 0.0
    config: Path | None = None

    @property
    def records(self) -> int:
        """Transactions, line items, events and points: what scoring reads."""
        return sum(self.rows.get(t, 0) for t in RECORD_TABLES)

    @property
    def as_of(self) -> date:
        """The last generated day: the natural `run --as-of`."""
        return self.options.last_day

    def load_commands(self) -> list[str]:
        """The shell commands that load this folder, in order."""
        return [
            f"milestones load {kind} {' '.join(str(p) for p in paths)}"
            for kind, paths in self.files.items()
        ]


# ------------------------------------------------------------------------- random numbers

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


# ------------------------------------------------------------------------------- the exports


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


def _draw_customers(people: pl.DataFrame, weight: str, u: pl.Expr) -> pl.Expr:
    """Row indexes into `people`, drawn with probability proportional to `weight`."""
    cum = people[weight].cum_sum()
    cum = cum / cum[-1]
    return pl.lit(cum).search_sorted(u, side="right").clip(upper_bound=people.height - 1)


def _day_and_time(opts: Options, u: Sequence[pl.Expr], first_day: pl.Expr, weekend_pull: float,
                  hours: tuple[int, int]) -> pl.Expr:
    """A local timestamp after `first_day` from five uniforms: a day uniform over the rest of
    the period, a share of them pulled forward to the next Saturday or Sunday (weekly
    seasonality), and a time of day peaking in the middle of `hours`."""
    span = pl.lit(opts.days, pl.Int64) - first_day
    day = first_day + (u[0] * span).floor().cast(pl.Int64)
    weekday = (day + opts.start.weekday()) % 7  # 0 = Monday
    saturday_or_sunday = 5 + (u[1] * 2).floor().cast(pl.Int64)
    pulled = day + (saturday_or_sunday - weekday + 7) % 7
    day = pl.when((u[2] < weekend_pull) & (pulled < opts.days)).then(pulled).otherwise(day)
    lo, hi = hours
    # Sum of two uniforms: a triangular day, busiest in the middle of the opening hours.
    hour = (u[3] + u[4]) * ((hi - lo) / 2) + lo
    seconds = day * 86_400 + (hour * 3_600).floor().cast(pl.Int64)
    start = datetime.combine(opts.start, datetime.min.time())
    return pl.lit(start) + pl.duration(seconds=seconds)


def _when(prefix: str) -> list[pl.Expr]:
    return [pl.col(f"{prefix}{i}") for i in range(5)]


@dataclass(frozen=True)
class Block:
    """One slice of the transactions, generated and written on its own so that memory stays
    bounded at any size: its bills and returns (and their lines, events and points) are
    numbered after the previous blocks', and every return's bill is in the same block."""

    index: int
    transactions: int
    regular: int
    first_bill: int  # bills before this block
    first_return: int  # returns before this block
    first_event: int
    events: int


def plan(opts: Options, block_rows: int = CHUNK_ROWS) -> list[Block]:
    """The blocks of `block_rows` transactions (the last one smaller); 97% of each are bills."""
    blocks, done, bills, rets, evs = [], 0, 0, 0, 0
    while done < opts.bills or not blocks:
        size = min(block_rows, opts.bills - done)
        regular = max(1, round(size * 0.97))
        n_events = max(1, round(size * EVENTS_PER_BILL))
        blocks.append(Block(len(blocks) + 1, size, regular, bills, rets, evs, n_events))
        done, bills, rets, evs = done + size, bills + regular, rets + size - regular, \
            evs + n_events
    return blocks


def _bills(opts: Options, people: pl.DataFrame, store_frame: pl.DataFrame, block: Block
           ) -> pl.DataFrame:
    """The block's regular bills (without amounts yet), sorted by time, with their line count;
    `_bill` is the bill's number over all blocks (from 0)."""
    rng = Rng(opts.seed)
    row = pl.col("_row")
    n = block.regular
    store_cum = (store_frame["_weight"] / store_frame["_weight"].sum()).cum_sum()
    store_cum[-1] = 1.0
    picked = rng.with_uniforms(
        pl.select(_row=pl.int_range(block.first_bill, block.first_bill + n, dtype=pl.Int64)),
        "_row", 21,
        ["_u_store", "_u_home", "_u_lines", "_t0", "_t1", "_t2", "_t3", "_t4"],
    ).with_columns(
        _c=_draw_customers(people, "_activity", rng.uniform(row, 20)),
        _other=pl.lit(store_cum).search_sorted(pl.col("_u_store"), side="right")
        .clip(upper_bound=store_frame.height - 1).cast(pl.Int64),
        _at_home=pl.col("_u_home") < 0.75,
        _lines=(pl.col("_u_lines").pow(2) * 5).floor().cast(pl.Int32) + 1,
    )
    p = people.select("customer_id", "_spend", "_home", "_signup")
    picked = picked.with_columns(
        pl.lit(p[c]).gather(pl.col("_c")).alias(c) for c in p.columns
    )
    store_ix = pl.when(pl.col("_at_home")).then(pl.col("_home")).otherwise(pl.col("_other"))
    bills = picked.select(
        "customer_id",
        "_spend",
        "_lines",
        txn_time=_day_and_time(opts, _when("_t"), pl.col("_signup"), 0.3, (8, 22)),
        store_id=pl.lit(store_frame["store_id"]).gather(store_ix),
        _online=pl.lit(store_frame["concept_id"] == "ONLINE").gather(store_ix),
        _key=row,
    )
    return bills.sort("txn_time", "_key").with_columns(
        _bill=pl.int_range(block.first_bill, block.first_bill + pl.len(), dtype=pl.Int64),
    ).drop("_key")


def _lines(opts: Options, bills: pl.DataFrame) -> pl.DataFrame:
    """Line items of the regular bills, amounts in cents, in bill order."""
    rng = Rng(opts.seed)
    names = list(CATEGORIES)
    weights = [v[0] for v in CATEGORIES.values()]
    prices = pl.Series([v[1] for v in CATEGORIES.values()], dtype=pl.Float64)
    prefixes = [v[2] for v in CATEGORIES.values()]
    lines = bills.select(
        "_bill", "txn_id", "_spend",
        line_no=pl.int_ranges(1, pl.col("_lines").cast(pl.Int64) + 1, dtype=pl.Int32),
    ).explode("line_no").with_columns(
        _key=pl.col("_bill").cast(pl.Int64) * 8 + pl.col("line_no").cast(pl.Int64),
    )
    lines = rng.with_uniforms(lines, "_key", 30, [
        "_u_cat", "_u_rate", "_u_qty", "_u_disc", "_u_pct", "_u_item", "_u_house", "_u_brand",
    ]).with_columns(_cat=_pick(weights, pl.col("_u_cat")))
    rate = (pl.lit(prices).gather(pl.col("_cat")) * (0.4 + 1.6 * pl.col("_u_rate"))
            * pl.col("_spend")).round(0).cast(pl.Int64).clip(lower_bound=19)
    qty = (pl.col("_u_qty").pow(3) * 4).floor().cast(pl.Int64) + 1
    pct = (pl.col("_u_pct") * 3).floor().cast(pl.Int64) + 1  # 10, 20 or 30% off
    lines = lines.with_columns(_rate=rate, _qty=qty).with_columns(
        _value=pl.col("_rate") * pl.col("_qty"),
    ).with_columns(
        _discount=pl.when(pl.col("_u_disc") < 0.15).then(pl.col("_value") * pct // 10)
        .otherwise(0),
    )
    # 400 items per category, a few of them popular: codes G1000..G1399, D1000...
    item = (pl.col("_u_item").pow(2) * 400).floor().cast(pl.Int64) + 1_000
    brand = (pl.col("_u_brand") * (len(BRANDS) - 1)).floor().cast(pl.Int64)
    return lines.select(
        "_bill", "txn_id", "line_no", "_rate", "_qty", "_value", "_discount",
        _amount=pl.col("_value") - pl.col("_discount"),
        category=_choose(names, pl.col("_cat")),
        item_code=pl.format("{}{}", _choose(prefixes, pl.col("_cat")), item),
        brand=pl.when(pl.col("_u_house") < 0.25).then(pl.lit("HOUSE"))
        .otherwise(_choose(BRANDS[1:], brand)),
    )


def _parented_returns(opts: Options, bills: pl.DataFrame, lines: pl.DataFrame, share: float,
                      store_frame: pl.DataFrame) -> pl.DataFrame:
    """Returns of part of one line of an earlier bill, 1 hour to 30 days later (cents)."""
    rng = Rng(opts.seed)
    last = datetime.combine(opts.last_day, datetime.max.time()).replace(microsecond=0)
    b = pl.col("_bill")
    chosen = bills.filter(rng.uniform(b, 40) < share).select(
        "_bill", "customer_id", "txn_time", "store_id", "_online",
        parent_txn_id="txn_id",
        line_no=(rng.uniform(b, 41) * pl.col("_lines")).floor().cast(pl.Int32) + 1,
        _later=pl.duration(hours=rng.below(b, 42, 30 * 24) + 1),
    )
    sold = lines.select("_bill", "line_no", "_rate", "_discount", "item_code", "category",
                        "brand", _sold=pl.col("_qty"))
    back = chosen.join(sold, on=["_bill", "line_no"], how="inner")
    # Part of the line's quantity comes back, with its share of the line's discount.
    back = back.with_columns(
        _qty=(rng.uniform(b, 43) * pl.col("_sold")).floor().cast(pl.Int64) + 1,
    )
    return back.select(
        "customer_id", "parent_txn_id", "_online", "_qty", "item_code", "category", "brand",
        "_rate",
        txn_time=pl.min_horizontal(pl.col("txn_time") + pl.col("_later"), pl.lit(last)),
        store_id=pl.when(rng.uniform(b, 44) < 0.8).then(pl.col("store_id"))
        .otherwise(pl.lit(store_frame["store_id"]).gather(rng.below(b, 45, store_frame.height))),
        _value=pl.col("_rate") * pl.col("_qty"),
        _discount=pl.col("_discount") * pl.col("_qty") // pl.col("_sold"),
        _has_line=pl.lit(True),
        _key=b,
    )


def _parentless_returns(opts: Options, first: int, n: int, people: pl.DataFrame,
                        store_frame: pl.DataFrame) -> pl.DataFrame:
    """Returns without a bill (goods bought before the data starts); half carry a line.
    `first` numbers them after the previous blocks' returns, so their draws differ."""
    rng = Rng(opts.seed)
    k = pl.col("_k")
    drawn = pl.select(_k=pl.int_range(first, first + n, dtype=pl.Int64)).with_columns(
        _c=_draw_customers(people, "_activity", rng.uniform(k, 50)),
        _cat=_pick([v[0] for v in CATEGORIES.values()], rng.uniform(k, 52)),
    ).with_columns(
        pl.lit(people[c]).gather(pl.col("_c")).alias(c)
        for c in ("customer_id", "_signup", "_home")
    )
    value = (rng.uniform(k, 51).pow(2) * 8_000).floor().cast(pl.Int64) + 99
    return drawn.select(
        "customer_id",
        parent_txn_id=pl.lit(None, pl.String),
        _online=pl.lit(store_frame["concept_id"] == "ONLINE").gather(pl.col("_home")),
        _qty=pl.lit(1, pl.Int64),
        item_code=pl.format("{}{}", _choose([v[2] for v in CATEGORIES.values()], pl.col("_cat")),
                            rng.below(k, 54, 400) + 1_000),
        category=_choose(list(CATEGORIES), pl.col("_cat")),
        brand=_choose(BRANDS, rng.below(k, 55, len(BRANDS))),
        _rate=value,
        txn_time=_day_and_time(opts, [rng.uniform(k, 90 + i) for i in range(5)],
                               pl.col("_signup"), 0.3, (8, 22)),
        store_id=pl.lit(store_frame["store_id"]).gather(pl.col("_home")),
        _value=value,
        _discount=pl.lit(0, pl.Int64),
        _has_line=rng.uniform(k, 56) < 0.5,
        _key=k + (1 << 40),
    )


def _return_exports(rets: pl.DataFrame, first: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return transactions and their lines, in time order, written negative as exports do
    (SPEC §13 takes |value|); numbered from `first` + 1."""
    rets = rets.sort("txn_time", "_key").with_columns(
        txn_id=pl.format("R{}", pl.int_range(first + 1, first + pl.len() + 1)),
        _net=pl.col("_value") - pl.col("_discount"),
    )
    lines = rets.filter("_has_line").select(
        "txn_id",
        line_no=pl.lit(1, pl.Int32),
        qty=(-pl.col("_qty")).cast(MONEY),
        amount=_money(-pl.col("_net")),
        item_code="item_code",
        rate=_money(pl.col("_rate")),
        value=_money(-pl.col("_value")),
        discount=_money(pl.col("_discount")),
        category="category",
        brand="brand",
    )
    txns = rets.select(
        "txn_id", "customer_id", "txn_time",
        amount=_money(-pl.col("_net")),
        type=pl.lit("RETURN"),
        parent_txn_id="parent_txn_id",
        store_id="store_id",
        gross_amount=_money(-pl.col("_value")),
        discount=_money(pl.col("_discount")),
        qty=(-pl.col("_qty")).cast(MONEY),
        channel=pl.when("_online").then(pl.lit("ONLINE")).otherwise(pl.lit("STORE")),
    )
    return txns, lines


def _bill_sums(lines: pl.DataFrame, counts: pl.Series) -> list[pl.Series]:
    """Per bill, the sums of its lines' cents: lines are in bill order, so a running total
    read at each bill's last line, minus the previous bill's, is the bill's sum (no hashing)."""
    ends = counts.cast(pl.Int64).cum_sum() - 1
    out = []
    for c in ("_amount", "_value", "_discount", "_qty"):
        at_end = lines[c].cum_sum().gather(ends)
        out.append((at_end - at_end.shift(1, fill_value=0)).alias(c))
    return out


def transactions_and_lines(opts: Options, people: pl.DataFrame, store_frame: pl.DataFrame,
                           block: Block) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The block's `transactions` (its bills, then its returns, each in time order; ~3%
    returns, two thirds of them with a parent bill) and `line_items`, and the bills with
    their amounts in cents (for `points`)."""
    n_regular = block.regular
    bills = _bills(opts, people, store_frame, block).with_columns(
        txn_id=pl.format("T{}", pl.col("_bill") + 1),
    )
    lines = _lines(opts, bills)
    bills = bills.with_columns(_bill_sums(lines, bills["_lines"]))
    n_returns = block.transactions - n_regular
    parented = _parented_returns(opts, bills, lines, n_returns * 2 / 3 / n_regular, store_frame)
    parented = parented.head(n_returns)
    parentless = _parentless_returns(opts, block.first_return, n_returns - parented.height,
                                     people, store_frame)
    ret_txns, ret_lines = _return_exports(
        pl.concat([parented, parentless], how="vertical_relaxed"), block.first_return)
    regular = bills.select(
        "txn_id", "customer_id", "txn_time",
        amount=_money(pl.col("_amount")),
        type=pl.lit("REGULAR"),
        parent_txn_id=pl.lit(None, pl.String),
        store_id="store_id",
        gross_amount=_money(pl.col("_value")),
        discount=_money(pl.col("_discount")),
        qty=pl.col("_qty").cast(MONEY),
        channel=pl.when("_online").then(pl.lit("ONLINE")).otherwise(pl.lit("STORE")),
    )
    line_items = lines.select(
        "txn_id", "line_no",
        qty=pl.col("_qty").cast(MONEY),
        amount=_money(pl.col("_amount")),
        item_code="item_code",
        rate=_money(pl.col("_rate")),
        value=_money(pl.col("_value")),
        discount=_money(pl.col("_discount")),
        category="category",
        brand="brand",
    )
    txns = pl.concat([regular, ret_txns], how="vertical_relaxed")
    lines_out = pl.concat([line_items, ret_lines], how="vertical_relaxed")
    return txns, lines_out, bills.select("_bill", "txn_id", "customer_id", "store_id",
                                         "txn_time", "_amount")


def events(opts: Options, people: pl.DataFrame, store_frame: pl.DataFrame, block: Block
           ) -> pl.DataFrame:
    """The block's app and store events of app users, in time order, attributes as columns."""
    rng = Rng(opts.seed)
    first, n = block.first_event, block.events
    app = people.filter(pl.col("_app_activity") > 0)
    if app.is_empty():
        app = people.head(1).with_columns(_app_activity=pl.lit(1.0))
    row = pl.col("_row")
    frame = rng.with_uniforms(
        pl.select(_row=pl.int_range(first, first + n, dtype=pl.Int64)), "_row", 61,
        ["_u_name", "_u_cart", "_u_rating", "_u_spin", "_t0", "_t1", "_t2", "_t3", "_t4"],
    ).with_columns(
        _c=_draw_customers(app, "_app_activity", rng.uniform(row, 60)),
        event_name=_choose(list(EVENTS), _pick(list(EVENTS.values()), pl.col("_u_name"))),
    )
    frame = frame.with_columns(
        pl.lit(app[c]).gather(pl.col("_c")).alias(c) for c in ("customer_id", "_signup", "_home")
    )
    name = pl.col("event_name")
    spins = _choose(["0", "500", "1000", "2500", "5000"],
                    _pick([30, 30, 20, 15, 5], pl.col("_u_spin"))).cast(pl.Int64)
    frame = frame.select(
        "_row", "customer_id", "event_name",
        event_time=_day_and_time(opts, _when("_t"), pl.col("_signup"), 0.15, (7, 24)),
        store_id=pl.when(name == "StoreCheckIn")
        .then(pl.lit(store_frame["store_id"]).gather(pl.col("_home"))),
        cart_value=pl.when(name == "AddToCart")
        .then(_money((pl.col("_u_cart").pow(2) * 30_000).floor().cast(pl.Int64) + 199)),
        rating=pl.when(name == "ProductReview")
        .then(_pick([5, 7, 15, 33, 40], pl.col("_u_rating")) + 1),
        points=pl.when(name == "spinTheWheel").then(_money(spins)),
    ).sort("event_time", "_row")
    return frame.select(
        event_id=pl.format("E{}", pl.int_range(first + 1, first + pl.len() + 1)),
        customer_id="customer_id", event_name="event_name", event_time="event_time",
        store_id="store_id", cart_value="cart_value", rating="rating", points="points",
    )


def points(opts: Options, bills: pl.DataFrame) -> pl.DataFrame:
    """REGULAR points for every bill (1 per unit spent, id ``PR-<txn_id>``) and PROMOTIONAL
    bonuses on ~12% of them (``PP-<txn_id>``), in time order. `bills` as
    `transactions_and_lines` returns them (amounts in cents)."""
    rng = Rng(opts.seed)
    bills = rng.with_uniforms(bills, "_bill", 70, ["_u_delay", "_u_promo", "_u_bonus", "_u_which"])
    minutes = lambda col, n: pl.duration(minutes=(pl.col(col) * n).floor().cast(pl.Int64))  # noqa: E731
    regular = bills.select(
        "customer_id", "txn_id", "store_id", "_bill",
        points_id=pl.format("PR-{}", pl.col("txn_id")),
        awarded_at=pl.col("txn_time") + minutes("_u_delay", 30) + pl.duration(minutes=1),
        points=(pl.col("_amount") // 100).clip(lower_bound=0).cast(MONEY),
        points_type=pl.lit("REGULAR"),
        promotion_id=pl.lit(None, pl.String),
    ).filter(pl.col("points") > 0)
    promo = bills.filter(pl.col("_u_promo") < 0.12).select(
        "customer_id", "txn_id", "store_id", "_bill",
        points_id=pl.format("PP-{}", pl.col("txn_id")),
        awarded_at=pl.col("txn_time") + minutes("_u_delay", 90) + pl.duration(minutes=31),
        points=_money(((pl.col("_u_bonus") * 20).floor().cast(pl.Int64) + 1) * 2_500),
        points_type=pl.lit("PROMOTIONAL"),
        promotion_id=pl.format("PROMO-{}", (pl.col("_u_which") * 40).floor().cast(pl.Int64)
                               + 101),
    )
    both = pl.concat([regular, promo]).sort("awarded_at", "_bill", "points_type")
    return both.select(
        "points_id",
        customer_id="customer_id", awarded_at="awarded_at", points="points",
        points_type="points_type", store_id="store_id", txn_id="txn_id",
        promotion_id="promotion_id",
    )


# ------------------------------------------------------------------------------ the programme


def _months_between(start: date, last: date, step: int) -> int:
    """How many windows of `step` months from `start` begin on or before `last` (SPEC §5)."""
    k = 0
    while k < 100 and _plus_months(start, k * step) <= last:
        k += 1
    return max(k, 1)


def _plus_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    days = [31, 29 if _leap(year) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return date(year, month, min(d.day, days))


def _leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _levels(counts: Sequence[int], windows: int) -> list[dict[str, Any]]:
    """Streak levels that can be reached in `windows` windows (at least one)."""
    usable = [n for n in counts if n <= windows] or [1]
    return [{"name": f"{n} in a row" if n > 1 else "first", "targetCountOfSequence": n}
            for n in usable]


def _target(name: str, entity: str, ttype: str, values: list[Any], *,
            method: str = "TRANSACTION", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "targetEntity": entity, "targetType": ttype,
                            "enrolmentMethod": method, "active": True}
    body.update(extra)
    body["defaultValues"] = [{"defaultValue": v} for v in values]
    return body


def _generated(name: str, kind: str, freq: str, start: date, n: int, targets: list[dict],
               description: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "description": description, "active": True, "trackingType": kind,
            "targetEvaluationType": "FIXED_CALENDAR_WINDOW", "frequencyType": freq,
            "frequency": 1, "totalPeriods": n, "targetCycleStartDate": start.isoformat(),
            "targets": targets}
    body.update(extra)
    return body


def programme(opts: Options, store_frame: pl.DataFrame | None = None) -> list[dict[str, Any]]:
    """Group bodies over the generated period: every tracking type (DEFAULT, UNIFIED with ALL
    and ANY, continuous and non-continuous STREAK with grace, CAPPING, leaderboard, userCreated),
    every window kind (fixed given and generated at every frequency, CYCLIC, PERIOD_AGNOSTIC)
    and every measure of SPEC §6.1, with rules, AST rules, filters and aggregate windows.

    The first two are the bench's SQL baseline: a DEFAULT monthly SALES group and a continuous
    streak over the same target.
    """
    store_frame = store_frame if store_frame is not None else stores(opts)
    start, last = opts.start, opts.last_day
    months = _months_between(start, last, 1)
    quarters = _months_between(start, last, 3)
    halves = _months_between(start, last, 6)
    years = _months_between(start, last, 12)
    weeks = min(100, (opts.days + 6) // 7)
    top = (store_frame.sort("_weight", descending=True, maintain_order=True)
           .head(3)["store_id"].cast(pl.Int64).to_list())
    m = lambda v: [v] * months  # noqa: E731 - one default value per monthly window
    fresh_ast = {
        "arity": "function_call", "value": "in",
        "operands": [
            {"arity": "object_dereference", "operands": [
                {"arity": "name", "value": "currentLineItem"},
                {"arity": "name", "value": "category"}]},
            {"arity": "literal", "value": "GROCERY"},
            {"arity": "literal", "value": "DAIRY"},
            {"arity": "literal", "value": "BAKERY"},
        ],
    }
    quarter_periods = [
        {"refCode": f"Q{k + 1}", "startDate": _plus_months(start, 3 * k).isoformat(),
         "endDate": (_plus_months(start, 3 * (k + 1)) - timedelta(days=1)).isoformat()}
        for k in range(quarters)
    ]
    goal_weeks = min(weeks, 26)
    spin_periods = [
        {"refCode": f"W{k + 1:02d}",
         "startDate": f"{(start + timedelta(days=7 * k)).isoformat()}T00:00:00",
         "endDate": f"{(start + timedelta(days=7 * k + 6)).isoformat()}T23:59:59"}
        for k in range(goal_weeks)
    ]
    daily = min(14, opts.days)
    campaign = start + timedelta(days=max(0, opts.days // 2 - daily // 2))
    span = {"fromDate": start.isoformat(), "toDate": last.isoformat()}
    return [
        _generated("Baseline Monthly Sales", "DEFAULT", "MONTHLY", start, months,
                   [_target("monthly_sales", "TRANSACTION", "SALES", m(200))],
                   "Spend 200 in a calendar month (the bench's SQL baseline)."),
        _generated("Baseline Monthly Sales Streak", "STREAK", "MONTHLY", start, months,
                   [_target("monthly_sales", "TRANSACTION", "SALES", m(200))],
                   "Spend 200 every month; levels at 3, 6 and 12 months in a row.",
                   streaks=_levels([3, 6, 12], months)),
        _generated("Monthly Spend Leaderboard", "DEFAULT", "MONTHLY", start, months,
                   [_target("big_bills", "TRANSACTION", "SALES", m(500),
                            expression="currentTxn.value >= 20")],
                   "Spend 500 a month on bills of 20 or more; ranked each month.",
                   leaderboardEnabled=True),
        _generated("Weekly Visit Streak", "STREAK", "WEEKLY", start, weeks,
                   [_target("weekly_visit", "TRANSACTION", "VISIT", [1] * weeks)],
                   "Shop every week; one missed week is forgiven per run.",
                   streaks=_levels([4, 8, 13, 26], weeks), streakGraceWindows=1),
        _generated("Quarterly Big Spender", "NON_CONTINUOUS_STREAK", "QUARTERLY", start,
                   quarters, [_target("quarter_gross", "TRANSACTION", "GROSS_SALES",
                                      [1500] * quarters)],
                   "Gross spend of 1500 in any 2 or 4 quarters (not necessarily in a row).",
                   streaks=_levels([2, 4], quarters)),
        {"name": "Quarter Challenge 3 of 4", "active": True, "trackingType": "UNIFIED",
         "description": "Any 3 of 4 challenges each quarter.",
         "combinationType": "ANY", "combinationCount": 3,
         "targetEvaluationType": "FIXED_CALENDAR_WINDOW", "frequencyType": "CUSTOM",
         "totalPeriods": quarters, "periods": quarter_periods,
         "targets": [
             _target("zone_spend", "TRANSACTION", "SALES", [1500] * quarters,
                     filters=[{"entityType": "ZONE", "entityIds": ["Z01", "Z02", "Z03"]}]),
             _target("quarter_visits", "TRANSACTION", "VISIT", [6] * quarters),
             _target("beauty_items", "LINEITEM", "QUANTITY", [3] * quarters,
                     expression='currentLineItem.category == "BEAUTY"'),
             _target("good_reviews", "EVENT", "COUNT", [1] * quarters,
                     eventName="ProductReview", expression="currentEvent.rating >= 4"),
         ]},
        _generated("Fresh Food Month", "UNIFIED", "MONTHLY", start, months, [
            _target("fresh_sales", "LINEITEM", "SALES", m(150),
                    expressionJson=json.dumps(fresh_ast)),
            _target("fresh_bills", "LINEITEM", "COUNT", m(4),
                    expression='in(currentLineItem.category, "GROCERY", "DAIRY", "BAKERY")'),
            _target("big_store_items", "TRANSACTION", "QUANTITY", m(20),
                    filters=[{"entityType": "CONCEPT", "entityIds": ["SUPER", "HYPER"]}]),
        ], "Fresh food sales and bills, and items bought in large stores, every month."),
        {"name": "Welcome Journey", "active": True, "trackingType": "DEFAULT",
         "description": "New members: three 14-day cycles from their first bill.",
         "targetEvaluationType": "CYCLIC_WINDOW", "frequencyType": "WEEKLY", "frequency": 2,
         "recurringCycles": 3, **span,
         "targets": [_target("welcome_bills", "TRANSACTION", "COUNT", [1, 2, 3],
                             method="IMPORT")]},
        {"name": "Cyclic Gross Spend", "active": True, "trackingType": "DEFAULT",
         "description": "Monthly cycles from the first bill: gross spend of 600.",
         "targetEvaluationType": "CYCLIC_WINDOW", "frequencyType": "MONTHLY", "frequency": 1,
         "recurringCycles": min(6, months), **span,
         "targets": [_target("cycle_gross", "TRANSACTION", "GROSS_SALES",
                             [600] * min(6, months))]},
        {"name": "Every 5 Visits", "active": True, "trackingType": "DEFAULT",
         "description": "A reward for every 5 shopping days.",
         "targetEvaluationType": "PERIOD_AGNOSTIC_WINDOW", "recurringCycles": 0, **span,
         "targets": [_target("five_visits", "TRANSACTION", "VISIT", [5])]},
        {"name": "Spend 1000 Again", "active": True, "trackingType": "DEFAULT",
         "description": "A reward each time net spend reaches 1000 (up to 10 times).",
         "targetEvaluationType": "PERIOD_AGNOSTIC_WINDOW", "recurringCycles": 10, **span,
         "targets": [_target("spend_1000", "TRANSACTION", "SALES", [1000] * 10)]},
        _generated("Promo Points Monthly Cap", "CAPPING", "MONTHLY", start, months,
                   [_target("promo_cap", "REWARDS", "PROMOTIONAL_POINTS", m(500))],
                   "At most 500 promotional points a month."),
        _generated("All Points Weekly Cap", "CAPPING", "WEEKLY", start, weeks,
                   [_target("points_cap", "REWARDS", "ALL_POINTS", [250] * weeks)],
                   "At most 250 points a week."),
        _generated("Regular Points Month", "DEFAULT", "MONTHLY", start, months,
                   [_target("regular_points", "REWARDS", "REGULAR_POINTS", m(300))],
                   "Earn 300 regular points in a month."),
        {"name": "Spin the Wheel Goals", "active": True, "trackingType": "DEFAULT",
         "description": "Members set their own weekly goal of wheel points.",
         "targetEvaluationType": "FIXED_CALENDAR_WINDOW", "frequencyType": "CUSTOM",
         "totalPeriods": goal_weeks, "periods": spin_periods, "userCreated": True,
         "targets": [_target("wheel_points", "EVENT", "EVENT_ATTRIBUTE", [],
                             method="IMPORT", eventName="spinTheWheel",
                             extendedFieldInfo={"name": "points",
                                                "aggregateFunction": "SUM"})]},
        _generated("Best Basket of the Day", "DEFAULT", "MONTHLY", start, months,
                   [_target("daily_best", "TRANSACTION", "EXTENDED_FIELD", m(400),
                            extendedFieldInfo={
                                "name": "amount", "aggregateFunction": "SUM",
                                "aggregateWindow": {"windowType": "MAX", "windowTimeUnit": "DAY",
                                                    "windowValue": 1}})],
                   "Sum of each day's biggest bill reaches 400 in a month."),
        _generated("Cart Builder", "DEFAULT", "WEEKLY", start, weeks,
                   [_target("cart_floor", "EVENT", "EVENT_ATTRIBUTE", [100] * weeks,
                            eventName="AddToCart",
                            extendedFieldInfo={
                                "name": "cart_value", "aggregateFunction": "SUM",
                                "aggregateWindow": {"windowType": "MIN", "windowTimeUnit": "DAY",
                                                    "windowValue": 2}})],
                   "The smallest cart of every two days adds up to 100 in a week."),
        _generated("House Brand Lines", "DEFAULT", "MONTHLY", start, months,
                   [_target("house_lines", "LINEITEM", "EXTENDED_FIELD", m(2),
                            expression='currentLineItem.brand == "HOUSE"',
                            extendedFieldInfo={"name": "brand", "aggregateFunction": "COUNT"})],
                   "Buy 2 house-brand lines a month."),
        _generated("App Habit", "DEFAULT", "MONTHLY", start, months,
                   [_target("app_days", "EVENT", "VISIT", m(8), eventName="AppOpen")],
                   "Open the app on 8 different days a month."),
        _generated("Flagship Weekends", "DEFAULT", "MONTHLY", start, months,
                   [_target("weekend_bills", "TRANSACTION", "COUNT", m(2),
                            expression="isWeekend(currentTxn.date)",
                            filters=[{"entityType": "STORE", "entityIds": top}])],
                   "Two weekend bills a month in the three flagship stores."),
        _generated("Online Half-Year", "DEFAULT", "HALF_YEARLY", start, halves,
                   [_target("online_sales", "TRANSACTION", "SALES", [300] * halves,
                            expression='currentTxn.channel == "ONLINE"')],
                   "Spend 300 online in a half-year."),
        _generated("Yearly VIP", "DEFAULT", "YEARLY", start, years,
                   [_target("vip_bills", "EVENT", "COUNT", [40] * years,
                            eventName="TransactionAdd")],
                   "40 bills in a year (bills read as TransactionAdd events)."),
        _generated("Daily Deals Fortnight", "DEFAULT", "DAILY", campaign, daily,
                   [_target("daily_spend", "LINEITEM", "GROSS_SALES", [25] * daily,
                            expression='currentLineItem.category != "GROCERY"')],
                   "A two-week campaign: 25 a day on non-grocery lines."),
    ]


def enrolments(opts: Options, people: pl.DataFrame, bodies: Sequence[dict[str, Any]]
               ) -> pl.DataFrame:
    """Rows for the IMPORT groups (and personal values for one TRANSACTION group):

    - Welcome Journey: every customer who joined during the period, from their sign-up day;
      10% of them leave again 60 days later;
    - Spin the Wheel Goals: 8% of app users set a goal for every week, a quarter of them a
      different goal for week 2;
    - Monthly Spend Leaderboard: 3% get a personal target, 1% an opening balance.
    """
    rng = Rng(opts.seed)
    names = {b["name"] for b in bodies}
    c = pl.col("customer_id")
    start = datetime.combine(opts.start, datetime.min.time())
    signed = pl.lit(start) + pl.duration(days=pl.col("_signup"))
    schema = {"group_name": pl.String, "customer_id": pl.Int64, "target_name": pl.String,
              "period_ref": pl.String, "enrolled_at": pl.Datetime("us"),
              "unenrolled_at": pl.Datetime("us"), "target_value": MONEY,
              "initial_balance": MONEY}
    parts = []
    if "Welcome Journey" in names:
        parts.append(people.filter(pl.col("_signup") > 0).select(
            group_name=pl.lit("Welcome Journey"), customer_id=c,
            target_name=pl.lit(None, pl.String), period_ref=pl.lit(None, pl.String),
            enrolled_at=signed,
            unenrolled_at=pl.when(rng.uniform(c, 80) < 0.1)
            .then(signed + pl.duration(days=60)),
            target_value=pl.lit(None, MONEY), initial_balance=pl.lit(None, MONEY),
        ))
    if "Spin the Wheel Goals" in names:
        setters = people.filter((pl.col("_app_activity") > 0) & (rng.uniform(c, 81) < 0.08))
        goal = _money((rng.below(c, 82, 10) + 1) * 500)
        parts.append(setters.select(
            group_name=pl.lit("Spin the Wheel Goals"), customer_id=c,
            target_name=pl.lit("wheel_points"), period_ref=pl.lit(None, pl.String),
            enrolled_at=signed, unenrolled_at=pl.lit(None, pl.Datetime("us")),
            target_value=goal, initial_balance=pl.lit(None, MONEY),
        ))
        parts.append(setters.filter(rng.uniform(c, 83) < 0.25).select(
            group_name=pl.lit("Spin the Wheel Goals"), customer_id=c,
            target_name=pl.lit("wheel_points"), period_ref=pl.lit("W02"),
            enrolled_at=signed, unenrolled_at=pl.lit(None, pl.Datetime("us")),
            target_value=_money((rng.below(c, 84, 4) + 1) * 250),
            initial_balance=pl.lit(None, MONEY),
        ))
    if "Monthly Spend Leaderboard" in names:
        personal = people.filter(rng.uniform(c, 85) < 0.04)
        parts.append(personal.select(
            group_name=pl.lit("Monthly Spend Leaderboard"), customer_id=c,
            target_name=pl.lit("big_bills"), period_ref=pl.lit(None, pl.String),
            enrolled_at=pl.when(rng.uniform(c, 86) < 0.25).then(signed),
            unenrolled_at=pl.lit(None, pl.Datetime("us")),
            target_value=pl.when(rng.uniform(c, 87) < 0.75)
            .then(_money((rng.below(c, 88, 8) + 2) * 10_000)),
            initial_balance=pl.when(rng.uniform(c, 86) < 0.25)
            .then(_money((rng.below(c, 89, 10) + 1) * 1_000)),
        ))
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat([p.cast(schema) for p in parts]).sort("group_name", "customer_id",
                                                          "period_ref", nulls_last=False)


# -------------------------------------------------------------------------------- the writer


def generate_blocks(opts: Options, block_rows: int = CHUNK_ROWS
                    ) -> Iterator[tuple[Block, dict[str, pl.DataFrame]]]:
    """Each block's transactions, line items, events and points, one block at a time."""
    store_frame = stores(opts)
    people = customers(opts, store_frame)
    for block in plan(opts, block_rows):
        txns, lines, bills = transactions_and_lines(opts, people, store_frame, block)
        yield block, {
            "transactions": txns,
            "line_items": lines,
            "events": events(opts, people, store_frame, block),
            "points": points(opts, bills),
        }


def generate_frames(opts: Options, block_rows: int = CHUNK_ROWS
                    ) -> tuple[dict[str, pl.DataFrame], list[dict[str, Any]]]:
    """Every export as one frame (table name -> frame) and the programme's group bodies: for
    tests and small sizes; `generate` writes block by block instead."""
    store_frame = stores(opts)
    people = customers(opts, store_frame)
    bodies = programme(opts, store_frame)
    parts: dict[str, list[pl.DataFrame]] = {t: [] for t in RECORD_TABLES}
    for _, frames in generate_blocks(opts, block_rows):
        for table, frame in frames.items():
            parts[table].append(frame)
    return {
        "stores": store_frame.drop("_weight"),
        **{t: pl.concat(f, how="vertical_relaxed") for t, f in parts.items()},
        "enrolments": enrolments(opts, people, bodies),
    }, bodies


def slug(name: str) -> str:
    """A group name as a file name: ``Every 5 Visits`` -> ``every_5_visits``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def generate(opts: Options, out: Path, *, fmt: str = "parquet", chunk_rows: int = CHUNK_ROWS,
             progress: Progress | None = None) -> Generated:
    """Write the exports, `groups/*.json`, a `milestones.toml` and a manifest into `out`.

    Files of a previous generation in `out` are replaced; nothing else there is touched.

    Raises:
        UsageError: an unknown format.
        InputError: `out` exists and is not a folder.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another --out")
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    store_frame = stores(opts)
    people = customers(opts, store_frame)
    bodies = programme(opts, store_frame)
    blocks = plan(opts, chunk_rows)
    single = len(blocks) == 1
    files: dict[str, list[Path]] = {kind: [] for kind in KIND_FILES.values()}
    rows = dict.fromkeys(KIND_FILES, 0)

    def write(table: str, frame: pl.DataFrame, part: int | None) -> None:
        name = f"{table}.{fmt}" if part is None else f"{table}-{part:04d}.{fmt}"
        path = out / name
        if fmt == "parquet":
            frame.write_parquet(path, statistics=False)
        else:
            frame.write_csv(path)
        files[KIND_FILES[table]].append(path)
        rows[table] += frame.height

    write("stores", store_frame.drop("_weight"), None)
    say(f"generating {opts.bills:,} transactions for {opts.customers:,} customers over "
        f"{opts.days} days, in {len(blocks)} block(s)")
    for block, frames in generate_blocks(opts, chunk_rows):
        for table, frame in frames.items():
            write(table, frame, None if single else block.index)
        say(f"block {block.index}/{len(blocks)} written ({time.perf_counter() - started:.0f} s)")
    write("enrolments", enrolments(opts, people, bodies), None)
    group_dir = out / "groups"
    group_dir.mkdir(exist_ok=True)
    groups = []
    for k, body in enumerate(bodies, start=1):
        path = group_dir / f"{k:02d}_{slug(body['name'])}.json"
        path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        groups.append(path)
    config = out / "milestones.toml"
    config.write_text(
        "# Written by `milestones generate`: the programme has a leaderboard group.\n"
        "[org]\ntimezone = \"UTC\"\nleaderboards_enabled = true\n", encoding="utf-8")
    generated = Generated(
        folder=out, options=opts, files=files, groups=groups,
        rows=rows, seconds=time.perf_counter() - started, config=config,
    )
    _write_manifest(generated)
    return generated


def _clear_previous(out: Path) -> None:
    manifest = out / MANIFEST
    if not manifest.exists():
        return
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for names in old.get("files", {}).values():
        for name in names:
            (out / name).unlink(missing_ok=True)
    for name in old.get("groups", []):
        (out / name).unlink(missing_ok=True)


def _write_manifest(g: Generated) -> None:
    options = asdict(g.options)
    options["start"] = g.options.start.isoformat()
    body = {
        "version": 1,
        "options": options,
        "bills": g.options.bills,
        "as_of": g.as_of.isoformat(),
        "rows": g.rows,
        "files": {kind: [p.name for p in paths] for kind, paths in g.files.items()},
        "groups": [str(p.relative_to(g.folder)) for p in g.groups],
        "seconds": round(g.seconds, 3),
    }
    (g.folder / MANIFEST).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def read_generated(folder: Path) -> Generated | None:
    """The generation in `folder` from its manifest, or None when there is none (or it is
    incomplete), so that `bench` can reuse data generated earlier."""
    try:
        body = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        o = body["options"]
        opts = Options(customers=o["customers"], days=o["days"], seed=o["seed"],
                       transactions=o["transactions"], start=date.fromisoformat(o["start"]))
        files = {kind: [folder / n for n in names] for kind, names in body["files"].items()}
        groups = [folder / n for n in body["groups"]]
    except (OSError, ValueError, KeyError, TypeError, UsageError):
        return None
    if not all(p.exists() for paths in files.values() for p in paths):
        return None
    config = folder / "milestones.toml"
    return Generated(folder=folder, options=opts, files=files, groups=groups,
                     rows=dict(body["rows"]), seconds=float(body.get("seconds", 0.0)),
                     config=config if config.exists() else None)


def describe(g: Generated) -> list[str]:
    """A generation in a few lines: sizes, where, and how to load it."""
    rows = ", ".join(f"{t} {n:,}" for t, n in g.rows.items())
    lines = [f"generated {g.records:,} records in {g.seconds:.1f} s into {g.folder}: {rows}",
             f"{len(g.groups)} groups in {g.folder / 'groups'}; data up to {g.as_of} "
             f"(run with --as-of {g.as_of})",
             "load with (in this order):"]
    db = g.folder / "milestones.duckdb"
    lines += [f"  milestones --db {db} {cmd.removeprefix('milestones ')}"
              for cmd in g.load_commands()]
    lines.append(f"  milestones --db {db} groups create {g.folder / 'groups'}/*.json")
    lines.append(f"  milestones --db {db} run --as-of {g.as_of}")
    return lines


__all__ = [
    "FORMATS",
    "Generated",
    "Options",
    "describe",
    "generate",
    "generate_frames",
    "programme",
    "read_generated",
    "slug",
]

