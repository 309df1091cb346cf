"""The one error servectl reports to a person (``servectl: error: ...``, exit 1)."""


class ServeError(RuntimeError):
    """The server could not be started, did not become ready or would not stop; the message says why."""
