"""Transactions, line items, events and points, one block at a time so memory stays bounded."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from pipeline.tools.generate.options import Options
from pipeline.tools.generate.people import customers, stores
from pipeline.tools.generate.rng import MONEY, Rng, _choose, _money, _pick

CHUNK_ROWS = 1_000_000

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
