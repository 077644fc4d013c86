"""PERIOD_AGNOSTIC cycles found by binary search equal the cycle-by-cycle passes.

`agnostic._cycles_by_search` takes over from the passes when the running sums only grow; the
passes still run for `explain` (a trace), so scoring with and without a trace must agree.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from pipeline.config import Config
from pipeline.scoring.agnostic import score_agnostic
from pipeline.scoring.context import GroupContext
from tests.engine_helpers import group, sources, target, txn

AS_OF = date(2024, 2, 20)
KINDS = [("TRANSACTION", "VISIT"), ("TRANSACTION", "COUNT"), ("TRANSACTION", "SALES"),
         ("LINEITEM", "COUNT"), ("LINEITEM", "SALES")]


@st.composite
def cases(draw: st.DrawFn) -> tuple:
    bills = []
    lines = []
    for n in range(draw(st.integers(1, 40))):
        day = date(2024, 1, 1) + timedelta(days=draw(st.integers(0, 60)))
        hour = draw(st.sampled_from([9, 9, 12, 18]))
        amount = draw(st.sampled_from(["0", "1", "2.5", "10", "40"]))
        cust = draw(st.integers(1, 4))
        bills.append(txn(f"b{n}", cust, f"{day}T{hour:02d}:00:00", amount))
        for line in range(draw(st.integers(0, 2))):
            lines.append({"txn_id": f"b{n}", "line_no": line, "qty": 1, "amount": amount,
                          "category": "X"})
    entity, ttype = draw(st.sampled_from(KINDS))
    values = draw(st.lists(st.sampled_from(["0", "1", "2", "2.5", "3", "25", "60"]),
                           min_size=1, max_size=3))
    cycles = draw(st.integers(0, 4))
    return bills, lines, entity, ttype, tuple(values), cycles


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_cycles_by_search_equal_the_cycle_by_cycle_passes(case: tuple) -> None:
    bills, lines, entity, ttype, values, cycles = case
    g = group(evaluation="PERIOD_AGNOSTIC_WINDOW", recurring_cycles=cycles,
              targets=(target(1, "t", entity=entity, ttype=ttype, values=values),))
    frames = sources(transactions=bills, line_items=lines)
    searched = score_agnostic(GroupContext(g, AS_OF, Config(), frames))
    passes = score_agnostic(GroupContext(g, AS_OF, Config(), frames), trace=[])
    for got, want in [(searched.progress, passes.progress),
                      (searched.achievements, passes.achievements)]:
        assert_frame_equal(got, want, check_exact=True)
    assert searched.progress.height == passes.progress.height


def test_cycles_by_search_close_where_the_passes_do_on_a_busy_customer() -> None:
    """Twelve visit days, every 5 visits, two bills on day 5: cycle 2 opens on day 5's second
    bill (it counts as that cycle's first visit), so three cycles close and one runs."""
    bills = [txn(f"b{d}", 1, f"2024-01-{d:02d}T10:00:00", "5") for d in range(1, 13)]
    bills.append(txn("b5b", 1, "2024-01-05T11:00:00", "5"))
    g = group(evaluation="PERIOD_AGNOSTIC_WINDOW",
              targets=(target(1, "t", ttype="VISIT", values=("5",)),))
    frames = sources(transactions=bills)
    searched = score_agnostic(GroupContext(g, AS_OF, Config(), frames)).progress
    assert searched.select("period_index", "value", "achieved").rows() == [
        (1, 5, True), (2, 5, True), (3, 3, False)]
    passes = score_agnostic(GroupContext(g, AS_OF, Config(), frames), trace=[]).progress
    assert_frame_equal(searched, passes, check_exact=True)
    assert pl.Series(searched["value"]).dtype == passes["value"].dtype
