"""Fault injection for chaos tests: ``MMR_WORKER_FAULT=point:probability[,point:p...]``.

At each named point of a batch (``claim``, ``load``, ``encode``, ``write``, ``commit``) the
worker kills itself with SIGKILL with the given probability, so that tests can make crashes
land exactly there.  ``MMR_WORKER_DELAY=point:seconds[,...]`` sleeps at a point instead, to
widen race windows (a slow encoder).  Both are off unless set.  ``MMR_WORKER_FAULT_LOG``
names a file that records the point of every injected kill.
"""

from __future__ import annotations

import os
import random
import signal
import time

from ..errors import ConfigError

__all__ = ["POINTS", "Faults"]

POINTS = ("claim", "load", "encode", "write", "commit")
ENV_FAULT = "MMR_WORKER_FAULT"
ENV_DELAY = "MMR_WORKER_DELAY"
ENV_LOG = "MMR_WORKER_FAULT_LOG"


def _parse(name: str) -> dict[str, float]:
    raw = os.environ.get(name, "").strip()
    out: dict[str, float] = {}
    if not raw:
        return out
    for part in raw.split(","):
        point, _, value = part.strip().partition(":")
        if point not in POINTS:
            raise ConfigError(f"{name}: unknown point {point!r}; use one of {', '.join(POINTS)}")
        try:
            out[point] = float(value)
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not point:number") from None
    return out


class Faults:
    """The configured faults and delays of this process."""

    def __init__(self) -> None:
        self.kill = _parse(ENV_FAULT)
        self.delay = _parse(ENV_DELAY)
        self._rng = random.Random(os.getpid() ^ int(time.time() * 1000))

    def at(self, point: str) -> None:
        """Maybe sleep, maybe die, at ``point``."""
        d = self.delay.get(point)
        if d:
            time.sleep(d)
        p = self.kill.get(point)
        if p and self._rng.random() < p:
            log = os.environ.get(ENV_LOG)
            if log:
                with open(log, "a", encoding="utf-8") as f:
                    f.write(point + "\n")
            os.kill(os.getpid(), signal.SIGKILL)
