"""Test support: what the tests drive a server with, importable by the benchmarks too.

- ``loadmix``: the mixed load of valid and invalid requests, every answer checked;
- ``lifecycle``: a server of its own with a candidate version, and a step run under that load;
- ``otlp_receiver``: a real OTLP/HTTP trace receiver;
- ``http_stub``: the stdlib's HTTP server answering with canned bodies.

Product code (handlers, servectl, client, model, deploy, offline, checks) never imports it
(tests/unit/test_support_boundary.py); benchmarks may.
"""
