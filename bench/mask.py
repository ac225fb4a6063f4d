"""Benchmark payload masking: syncws against websockets, C and pure Python.

Run it as ``python bench/mask.py``; it takes about fifteen seconds.  This is a
benchmark, not a test: it prints numbers and never fails on them.

It measures four implementations in one run, on the same inputs:

* syncws C: ``syncws._speedups.apply_mask``, whatever ``SYNCWS_NO_SPEEDUPS``
  says, so that both syncws paths are always measured;
* syncws pure Python: ``syncws.masking.py_apply_mask``;
* websockets C: ``websockets.speedups.apply_mask``;
* websockets pure Python: ``websockets.utils.apply_mask``, the fallback that
  ``websockets.frames`` uses without its extension.

Each measurement is the best of several timing rounds (noise only ever adds
time), and the rounds alternate between implementations so that a burst of
load on the machine does not favour one of them.  The script then checks the
targets syncws holds itself to at 1 MiB: C at least 0.9 times websockets' C,
pure Python at least 1.0 times websockets' pure Python.
"""

from __future__ import annotations

import os
import platform
import sys
import timeit
from typing import Callable, Dict, List, Optional

try:
    import websockets
    from websockets.utils import apply_mask as websockets_py_apply_mask
except ImportError:
    sys.exit(
        "bench/mask.py compares syncws with websockets, which is not installed: "
        "pip install websockets"
    )
try:
    from websockets.speedups import apply_mask as websockets_c_apply_mask
except ImportError:  # a websockets build without its C extension
    websockets_c_apply_mask = None

from syncws.masking import py_apply_mask as syncws_py_apply_mask

try:
    from syncws._speedups import apply_mask as syncws_c_apply_mask
except ImportError:  # syncws installed without a C compiler
    syncws_c_apply_mask = None

MaskFunction = Callable[[bytes, bytes], bytes]

SIZES = [125, 64 * 1024, 1024 * 1024, 16 * 1024 * 1024]
BAR_SIZE = 1024 * 1024
C_BAR = 0.9
PYTHON_BAR = 1.0

#: Timing rounds per implementation and size; the best one is kept.
ROUNDS = 11
#: Minimum duration of one round, in seconds: long enough for the clock's
#: resolution and call overhead not to matter.
ROUND_SECONDS = 0.05


def calibrate(function: MaskFunction, data: bytes, mask: bytes) -> int:
    """Find how many calls make one round last at least ``ROUND_SECONDS``.

    Args:
        function: The masking function to time.
        data: The payload.
        mask: The key.

    Returns:
        The number of calls per round.
    """
    timer = timeit.Timer(lambda: function(data, mask))
    number = 1
    while True:
        elapsed = timer.timeit(number)
        if elapsed >= ROUND_SECONDS:
            return number
        # Jump close to the target instead of doubling from 1 every time.
        number = max(number * 2, int(number * ROUND_SECONDS * 1.2 / max(elapsed, 1e-9)))


def measure(
    functions: Dict[str, MaskFunction], size: int, mask: bytes
) -> Dict[str, float]:
    """Time each function on one payload size.

    Args:
        functions: The implementations to compare, by name.
        size: The payload size in bytes.
        mask: The key.

    Returns:
        The throughput of each implementation in MB/s (10**6 bytes per
        second), by name.

    Raises:
        AssertionError: If the implementations disagree on the result.
    """
    data = os.urandom(size)
    results = {name: function(data, mask) for name, function in functions.items()}
    expected = next(iter(results.values()))
    # A fast wrong answer is worth nothing: check before timing.
    for name, result in results.items():
        assert result == expected, f"{name} disagrees at {size} bytes"
    del results, expected

    numbers = {
        name: calibrate(function, data, mask) for name, function in functions.items()
    }
    best = {name: float("inf") for name in functions}
    for _ in range(ROUNDS):
        for name, function in functions.items():
            timer = timeit.Timer(lambda: function(data, mask))
            per_call = timer.timeit(numbers[name]) / numbers[name]
            best[name] = min(best[name], per_call)
    return {name: size / seconds / 1e6 for name, seconds in best.items()}


def format_size(size: int) -> str:
    """Return ``size`` in bytes as a short human-readable label.

    Args:
        size: A size in bytes.

    Returns:
        A label such as ``"125 B"``, ``"64 KiB"`` or ``"16 MiB"``.
    """
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    """Return ``numerator / denominator``, or None if either is missing.

    Args:
        numerator: A throughput, or None if not measured.
        denominator: A throughput, or None if not measured.

    Returns:
        The ratio, or None.
    """
    if numerator is None or denominator is None:
        return None
    return numerator / denominator


def cell(value: Optional[float], suffix: str = "") -> str:
    """Format a table cell, ``n/a`` for what could not be measured.

    Args:
        value: The number to show, or None.
        suffix: Appended to the number, e.g. ``"x"``.

    Returns:
        The formatted cell.
    """
    if value is None:
        return "n/a"
    if suffix == "x":
        return f"{value:.2f}x"
    return f"{value:,.0f}"


def main() -> int:
    """Run the benchmark and print the table and the verdicts.

    Returns:
        The process exit status: 0, since numbers are not failures.
    """
    functions: Dict[str, MaskFunction] = {}
    if syncws_c_apply_mask is not None:
        functions["syncws C"] = syncws_c_apply_mask
    if websockets_c_apply_mask is not None:
        functions["websockets C"] = websockets_c_apply_mask
    functions["syncws Python"] = syncws_py_apply_mask
    functions["websockets Python"] = websockets_py_apply_mask

    print(
        f"Masking throughput, MB/s (best of {ROUNDS} rounds of >= "
        f"{ROUND_SECONDS * 1000:.0f} ms each); higher is better"
    )
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.machine()}, websockets {websockets.__version__}"
    )
    if syncws_c_apply_mask is None:
        print("syncws._speedups is not built: syncws C not measured")
    if websockets_c_apply_mask is None:
        print("websockets.speedups is not available: websockets C not measured")
    print()

    columns = [
        "size",
        "syncws C",
        "websockets C",
        "C ratio",
        "syncws Py",
        "websockets Py",
        "Py ratio",
    ]
    widths = [8, 12, 14, 9, 11, 15, 10]
    print("".join(f"{name:>{width}}" for name, width in zip(columns, widths)))

    mask = os.urandom(4)
    ratios_at_bar: Dict[str, Optional[float]] = {}
    for size in SIZES:
        speed = measure(functions, size, mask)
        c_ratio = ratio(speed.get("syncws C"), speed.get("websockets C"))
        py_ratio = ratio(speed["syncws Python"], speed["websockets Python"])
        row: List[str] = [
            format_size(size),
            cell(speed.get("syncws C")),
            cell(speed.get("websockets C")),
            cell(c_ratio, "x"),
            cell(speed["syncws Python"]),
            cell(speed["websockets Python"]),
            cell(py_ratio, "x"),
        ]
        print("".join(f"{value:>{width}}" for value, width in zip(row, widths)), flush=True)
        if size == BAR_SIZE:
            ratios_at_bar = {"C": c_ratio, "Python": py_ratio}

    print()
    for kind, bar in (("C", C_BAR), ("Python", PYTHON_BAR)):
        measured = ratios_at_bar.get(kind)
        if measured is None:
            verdict = "NOT MEASURED (an implementation is missing)"
        elif measured >= bar:
            verdict = "holds"
        else:
            verdict = "DOES NOT HOLD"
        print(
            f"{kind} bar, syncws >= {bar:.1f}x websockets at "
            f"{format_size(BAR_SIZE)}: {cell(measured, 'x')} -> {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
