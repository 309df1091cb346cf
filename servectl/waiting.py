"""One way to wait: poll a check until it holds or a deadline passes, then say what was awaited.

servectl, the tests and the benchmarks all wait for something (workers READY, a port
answering, a process gone, a counter reaching a value). They use this helper, built on
tenacity, instead of each writing its own ``while time.monotonic() < deadline`` loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryError, Retrying, retry_if_exception_type, retry_if_result, stop_after_delay, wait_fixed

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The awaited condition did not hold before the deadline; the message names it."""


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``check`` every ``interval`` seconds until it returns a truthy value, and return it.

    ``retry_on``: exceptions that mean "not yet" (e.g. a refused connection) rather than
    failure. After ``timeout`` seconds raise :class:`WaitTimeout` naming ``what`` and the last
    value or error seen, so a failed wait explains itself.
    """
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(lambda value: not value) | retry_if_exception_type(retry_on),
        reraise=False,
    )
    try:
        value = retrying(check)
    except RetryError as exc:
        last = exc.last_attempt
        seen = f"last error: {last.exception()!r}" if last.failed else f"last value: {last.result()!r}"
        raise WaitTimeout(f"{what}: not reached within {timeout:g} s ({seen})") from None
    assert value is not None  # tenacity retried every falsy value
    return value
