"""milestones: nightly batch scoring of loyalty achievements from exported data."""

from __future__ import annotations

__all__: list[str] = []
