"""CPU thread behaviour that holds up on a shared box (issue 21).

torch's CPU kernels run on an OpenMP team (libgomp). By default its threads spin-wait after
each parallel region, so that the next region starts at once. When other processes keep the
cores busy, a spinning or descheduled team member stalls every region: measured on the 2-core
dev box at load ~7, a 0.7 M-element float32 subtraction took 10.9 ms with 2 spinning threads,
0.35 ms with 1 thread and 0.36-0.55 ms with 2 threads and ``OMP_WAIT_POLICY=PASSIVE``
(docs/benchmarks.md, issue 21). PASSIVE makes idle team members sleep instead of spinning.

libgomp reads the variable once, when torch is first imported, so it is set (unless the user
set it) when the package is imported, before any torch import of ours.
"""

from __future__ import annotations

import os
import sys

__all__ = ["configure_openmp"]


def configure_openmp() -> None:
    """Default ``OMP_WAIT_POLICY=PASSIVE`` (a user's own setting wins), effective when
    torch has not been imported yet."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
