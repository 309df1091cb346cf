"""The model metrics beside TorchServe's own.

- ``exporter``        the /metrics endpoint on model_metrics_address (runs as TorchServe's launcher)
- ``worker_metrics``  what it serves: the handlers' prometheus-client files, worker gauges
- ``monitor``         a Prometheus against one instance (``make monitor``)
"""
