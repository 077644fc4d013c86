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

# The package splits one former module by job (options, rng, people, records, groups, files);
# `gen.<name>` keeps working for every public name it had ("X as X": an explicit re-export).
from pipeline.tools.generate.files import FORMATS as FORMATS
from pipeline.tools.generate.files import KIND_FILES as KIND_FILES
from pipeline.tools.generate.files import MANIFEST as MANIFEST
from pipeline.tools.generate.files import RECORD_TABLES as RECORD_TABLES
from pipeline.tools.generate.files import Generated as Generated
from pipeline.tools.generate.files import Progress as Progress
from pipeline.tools.generate.files import describe as describe
from pipeline.tools.generate.files import generate as generate
from pipeline.tools.generate.files import generate_frames as generate_frames
from pipeline.tools.generate.files import read_generated as read_generated
from pipeline.tools.generate.files import slug as slug
from pipeline.tools.generate.groups import enrolments as enrolments
from pipeline.tools.generate.groups import programme as programme
from pipeline.tools.generate.options import BILLS_PER_CUSTOMER_DAY as BILLS_PER_CUSTOMER_DAY
from pipeline.tools.generate.options import DEFAULT_START as DEFAULT_START
from pipeline.tools.generate.options import Options as Options
from pipeline.tools.generate.people import CONCEPTS as CONCEPTS
from pipeline.tools.generate.people import STORE_BASE as STORE_BASE
from pipeline.tools.generate.people import ZONES as ZONES
from pipeline.tools.generate.people import customers as customers
from pipeline.tools.generate.people import stores as stores
from pipeline.tools.generate.records import BRANDS as BRANDS
from pipeline.tools.generate.records import CATEGORIES as CATEGORIES
from pipeline.tools.generate.records import CHUNK_ROWS as CHUNK_ROWS
from pipeline.tools.generate.records import EVENTS as EVENTS
from pipeline.tools.generate.records import EVENTS_PER_BILL as EVENTS_PER_BILL
from pipeline.tools.generate.records import Block as Block
from pipeline.tools.generate.records import events as events
from pipeline.tools.generate.records import generate_blocks as generate_blocks
from pipeline.tools.generate.records import plan as plan
from pipeline.tools.generate.records import points as points
from pipeline.tools.generate.records import transactions_and_lines as transactions_and_lines
from pipeline.tools.generate.rng import MONEY as MONEY
from pipeline.tools.generate.rng import Rng as Rng

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

