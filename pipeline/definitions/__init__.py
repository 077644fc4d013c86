"""Group bodies (POST v3/targetGroups JSON) -> typed, validated definitions."""

from __future__ import annotations
