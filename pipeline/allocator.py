"""How long polars' allocator keeps freed memory before it gives the pages back to the system.

Why: polars sets its allocator (jemalloc) to return freed pages after 0.5 s, to keep a small
resident size. A run scores shard after shard, and each shard allocates the same few GiB of
columns again, so every shard faulted its memory in afresh from the kernel: at 10 M
transactions, scoring 2 of the 8 shards took 4 M page faults and 11.6 of its 54 CPU-s in the
kernel. Keeping freed pages 10 s, dirty and muzzy (jemalloc's default keeps dirty pages 10 s
and muzzy ones not at all: 27.6 s), lets the next shard reuse them: 2 M faults, 6.3 kernel
CPU-s, 25-26 s wall instead of 29 s, with 0.3-0.5 GiB more resident.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

VARIABLE = "_RJEM_MALLOC_CONF"  # read by polars' jemalloc, once, when polars is imported
KEEP_FREED_MS = 10_000
SETTING = f"dirty_decay_ms:{KEEP_FREED_MS},muzzy_decay_ms:{KEEP_FREED_MS}"


def keep_freed_memory(
    environ: MutableMapping[str, str] = os.environ, loaded: Mapping[str, Any] = sys.modules
) -> bool:
    """Have polars' allocator keep freed memory for `KEEP_FREED_MS`; whether it was set.

    Not when the variable is already set (the operator's choice wins), nor once polars is
    loaded (too late to matter). Polars appends the variable to its own defaults, and the
    later setting wins. Child processes (Dask workers) inherit it.
    """
    if VARIABLE in environ or "polars" in loaded:
        return False
    environ[VARIABLE] = SETTING
    return True
