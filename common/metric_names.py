"""The model metrics' name prefix: the handler (handlers.telemetry) records them and
servectl's exporter adds the worker gauges under the same prefix; the rules, the dashboard
and the tests select on it. Plain Python, no imports."""

PREFIX = "tabular"
