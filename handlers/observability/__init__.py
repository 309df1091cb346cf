"""Request-level observability for the handler: request IDs, structured log lines, OpenTelemetry
traces and the sampled prediction log. Pure modules (no TorchServe import), so each is unit
tested without a server; ``observer`` is the one object the handler talks to per batch."""
