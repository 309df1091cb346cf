"""What the server side (servectl, model/, deploy/) and the handler both need: the model card,
the metric names, the load-status file, the settings-file loader and the Prometheus text parser.
It imports nothing else of the project, so the serving image and the .mar copy it whole."""
