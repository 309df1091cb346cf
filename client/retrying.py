"""The client's one retry layer (tenacity) and its one budget: attempts and total time.

Why one layer: requests' adapter used to resend 503s and refused connections (urllib3's
``Retry``) underneath tenacity's own resends, so one call made up to (retries + 1)² requests and
waited far longer than its retries said. Now the adapter never resends; every call goes through
:func:`retrying`, which resends only what ``retry_if`` accepts (the caller's rule:
``PredictionError.transient``), at most ``attempts`` times in all, and starts no attempt once
``seconds`` have passed since the first. A ``cancel`` event (Ctrl-C in ``client score``) ends
the backoff sleep at once and starts no further attempt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_before_delay, wait_exponential

MAX_WAIT_S = 5.0  # the longest backoff sleep between two attempts


class Cancelled(Exception):
    """The caller asked the client to stop (e.g. Ctrl-C): no further attempt was made."""


@dataclass(frozen=True)
class Budget:
    """How many attempts one call may make (``retries + 1``), and for how long it may start them."""

    attempts: int
    seconds: float
    backoff: float


def retrying(
    budget: Budget,
    retry_if: Callable[[BaseException], bool],
    cancel: threading.Event | None = None,
    on_resend: Callable[[], None] | None = None,
) -> Retrying:
    """A tenacity ``Retrying`` for one call: exponential backoff from ``budget.backoff``, the
    last error re-raised when the budget is spent, :class:`Cancelled` once ``cancel`` is set;
    ``on_resend`` is called once per resend (tenacity sleeps exactly once before each)."""

    def sleep(seconds: float) -> None:
        if cancel is None:
            time.sleep(seconds)
        elif cancel.wait(seconds):
            raise Cancelled("cancelled: no further attempt was made")
        if on_resend is not None:
            on_resend()

    return Retrying(
        stop=stop_after_attempt(max(1, budget.attempts)) | stop_before_delay(budget.seconds),
        wait=wait_exponential(multiplier=budget.backoff, max=MAX_WAIT_S),
        retry=retry_if_exception(retry_if),
        sleep=sleep,
        reraise=True,
    )
