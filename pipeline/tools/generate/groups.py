"""The programme: group bodies and enrolments that exercise every feature on the generated data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from pipeline.tools.generate.options import Options
from pipeline.tools.generate.people import stores
from pipeline.tools.generate.rng import MONEY, Rng, _money


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
