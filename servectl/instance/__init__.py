"""One TorchServe instance: start, wait for READY, drain, stop; its management API and keys.

- ``launch``      preflight checks, environment, command line, ``start``
- ``readiness``   model status, the READY rule, ``wait_ready``, the handler's refusal, log tail
- ``processes``   finding an instance by its config path, ``stop``, ``stop_group``
- ``draining``    waiting out queued requests before a stop (SIGTERM)
- ``management``  the management API client (describe, register, set-default, unregister)
- ``tokens``      TorchServe's API keys when token auth is on
- ``java``        finding (or installing) Java 11+
"""
