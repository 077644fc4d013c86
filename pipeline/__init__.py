"""milestones: nightly batch scoring of loyalty achievements from exported data."""

from __future__ import annotations

from pipeline.allocator import keep_freed_memory

# Before any module of the package imports polars (see `pipeline.allocator`).
keep_freed_memory()

__all__: list[str] = []
