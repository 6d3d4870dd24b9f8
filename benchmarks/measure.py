"""What every benchmark shares: the ``BENCH`` line it prints and a peak-memory probe.

The benchmark modules (`bench`, `generate`, `workload`) all import from here and
nothing here imports them, so the imports run one way.
"""

from __future__ import annotations

import resource
import threading
import time


def emit(name: str, **values: float | int | str) -> None:
    """Print one ``BENCH <name> key=value ...`` line (floats to 4 significant digits).

    Example:
        >>> emit("load", backend="bridge", ratio=24.93821, n=3)
        BENCH load backend=bridge ratio=24.94 n=3
    """
    fields = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    print(f"BENCH {name} {fields}", flush=True)


class PeakMemory:
    """Peak resident memory above the level at entry, sampled every millisecond.

    `ru_maxrss` cannot be reset, and loading a model usually sets it higher than
    anything after; sampling the current RSS (Linux `/proc/self/statm`) does not.
    """

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._page_mb = resource.getpagesize() / 2**20

    def _rss_mb(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page_mb

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._rss_mb() - self._base)
            time.sleep(0.001)

    def __enter__(self) -> PeakMemory:
        self._base = self._rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
