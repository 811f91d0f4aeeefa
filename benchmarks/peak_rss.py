"""Peak resident memory of the current process over a block of code (Linux), shared by the benchmarks.

The peak is the kernel's exact high-water mark ``VmHWM`` (``/proc/self/status``), reset to the current
RSS on entry by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0). Where that is not allowed, a
thread samples ``/proc/self/statm`` every 1 ms instead (a lower bound: short peaks can be missed).
"""

from __future__ import annotations

import os
import threading
import time

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

def status_kb(key: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return status_kb("VmHWM") <= status_kb("VmRSS") + 1024


class PeakRSS:
    """Context manager: ``peak_kb`` = the highest RSS (kB) while inside (see module docstring)."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s, self.peak_kb, self.method = interval_s, 0, ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        with open("/proc/self/statm") as f:
            while not self._stop.is_set():
                f.seek(0)
                self.peak_kb = max(self.peak_kb, int(f.read().split()[1]) * PAGE_KB)
                time.sleep(self.interval_s)

    def __enter__(self) -> PeakRSS:
        if _reset_peak():
            self.method = "VmHWM after clear_refs"
        else:
            self.method = "statm sampled every 1 ms (lower bound)"
            self.peak_kb = status_kb("VmRSS")
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            self.peak_kb = status_kb("VmHWM")
        else:
            self._stop.set()
            self._thread.join()
