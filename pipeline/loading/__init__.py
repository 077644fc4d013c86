"""loading."""

from __future__ import annotations
