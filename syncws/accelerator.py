"""The optional C accelerator, ``syncws._speedups``, looked up once for every module.

Theory of operation
-------------------

``syncws/speedups.c`` is built into ``syncws._speedups`` when a C compiler is
available at install time; without one, syncws runs on pure Python.  The
modules it accelerates (:mod:`syncws.masking`, :mod:`syncws.framing`,
:mod:`syncws.payload`, :mod:`syncws.transport`) each
keep a pure-Python version of every function it provides, with the same
behaviour, errors included, and pick the C one through :data:`SPEEDUPS` —
so the rule for which implementation runs lives here, once.

Setting the environment variable ``SYNCWS_NO_SPEEDUPS`` to a non-empty value
other than ``0`` before syncws is imported forces the pure-Python path, for
debugging and benchmarking.  It is read at import time only: switching
implementations under running connections would gain nothing.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Optional

__all__ = ["SPEEDUPS"]

#: The ``syncws._speedups`` module, or ``None`` when it isn't built or
#: ``SYNCWS_NO_SPEEDUPS`` disables it.
SPEEDUPS: Optional[ModuleType]

try:
    if os.environ.get("SYNCWS_NO_SPEEDUPS", "") not in ("", "0"):
        raise ImportError("syncws speedups disabled by SYNCWS_NO_SPEEDUPS")
    from . import _speedups as SPEEDUPS
except ImportError:
    SPEEDUPS = None

if SPEEDUPS is not None and hasattr(os, "register_at_fork"):
    # A thread of the parent may hold the gate at the fork, and the child
    # doesn't have that thread to release it.
    os.register_at_fork(after_in_child=SPEEDUPS.reset_gate)
