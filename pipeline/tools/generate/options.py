"""What to generate: the options every part of the generator reads, checked once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pipeline.errors import UsageError

DEFAULT_START = date(2025, 1, 1)
BILLS_PER_CUSTOMER_DAY = 0.055  # ~20 bills a year per customer


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
