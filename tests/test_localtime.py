"""`localtime.local_date` (a table lookup) agrees with polars' own zone conversion everywhere:
at every offset change of the table's years and a second either side, at random instants, and
outside the table's years (which take polars' conversion)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from pipeline.scoring import localtime

TS = pl.Datetime("us", "UTC")
ZONES = [
    "Europe/Amsterdam",
    "America/New_York",
    "America/Sao_Paulo",  # DST abolished in 2019
    "Asia/Kolkata",  # +5:30
    "Asia/Kathmandu",  # +5:45, changed in 1986
    "Australia/Lord_Howe",  # a 30-minute DST step
    "Pacific/Apia",  # skipped 30 December 2011
    "Africa/Casablanca",  # DST paused each Ramadan
    "UTC",
]


def _expected(instants: pl.Series, tz: str) -> pl.Series:
    return instants.dt.convert_time_zone(tz).dt.date()


def _got(instants: pl.Series, tz: str) -> pl.Series:
    frame = pl.DataFrame({"ts": instants})
    return frame.select(localtime.local_date(pl.col("ts"), tz))["ts"]


@pytest.mark.parametrize("tz", ZONES)
def test_local_date_agrees_with_polars_at_every_offset_change(tz: str) -> None:
    if tz == "UTC":
        changes = pl.Series([], dtype=pl.Int64)
    else:
        changes, _ = localtime.offset_steps(tz)
    assert tz == "UTC" or changes.len() > 0
    around = pl.concat([changes + d for d in (-1_000_001, -1, 0, 1, 999_999, 3_600_000_000)])
    instants = around.cast(TS)
    assert _got(instants, tz).equals(_expected(instants, tz))


@pytest.mark.parametrize("tz", ZONES)
def test_local_date_agrees_with_polars_at_random_instants_inside_and_outside_the_table(
    tz: str,
) -> None:
    low = int(datetime(1850, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
    high = int(datetime(2150, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
    row = pl.int_range(20_000, dtype=pl.Int64, eager=True)
    us = (row.hash(7) % (high - low)).cast(pl.Int64) + low
    instants = pl.concat([us, pl.Series([None], dtype=pl.Int64)]).cast(TS)
    assert _got(instants, tz).equals(_expected(instants, tz))


def test_the_offset_table_is_worked_out_once_per_zone() -> None:
    first = localtime.offset_steps("Europe/Amsterdam")
    assert localtime.offset_steps("Europe/Amsterdam") is first
    instants, offsets = first
    assert offsets.len() == instants.len() + 1
    assert instants.is_sorted()
