"""Loading exports (SPEC §3): pandera-validated, exact-decimal, upserting loads with rejects.

`load_exports` is the one entry point; `describe` turns its report into terminal lines.
"""

from __future__ import annotations

from pipeline.loading.kinds import KINDS, ColumnSpec, ColumnType, Kind, get_kind
from pipeline.loading.load import FileReport, LoadReport, describe, load_exports

__all__ = [
    "KINDS",
    "ColumnSpec",
    "ColumnType",
    "FileReport",
    "Kind",
    "LoadReport",
    "describe",
    "get_kind",
    "load_exports",
]
