"""`pipeline.allocator`: polars' allocator keeps freed memory 10 s, unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline import allocator

SHOW = "import pipeline, polars, os; print(os.environ.get('_RJEM_MALLOC_CONF'))"


def _setting_after_import(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != allocator.VARIABLE} | env
    done = subprocess.run([sys.executable, "-c", SHOW], env=environ, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def test_importing_the_package_first_sets_the_allocator_after_polars_defaults():
    # Polars puts its defaults first and appends ours; jemalloc takes the last of each option.
    assert _setting_after_import().endswith(allocator.SETTING)


def test_the_operators_own_allocator_setting_is_left_alone():
    setting = _setting_after_import(_RJEM_MALLOC_CONF="narenas:2")
    assert setting.endswith(",narenas:2")
    assert "dirty_decay_ms:10000" not in setting


def test_nothing_is_set_once_polars_is_loaded():
    environ: dict[str, str] = {}
    assert allocator.keep_freed_memory(environ, {"polars": object()}) is False
    assert environ == {}
    assert allocator.keep_freed_memory(environ, {}) is True
    assert environ == {allocator.VARIABLE: allocator.SETTING}
