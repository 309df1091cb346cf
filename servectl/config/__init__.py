"""servectl's typed settings, read from serve_config/ without side effects.

- ``settings``      one instance: config.properties, servectl.yaml, lifecycle.yaml, ports, run folder, ``render``
- ``properties``    Java properties files, read and written as Java does
- ``model_config``  model-config.yaml's values servectl, tests and benchmarks need
- ``lifecycle``     lifecycle.yaml: rollout, drain, canary, watch and stop settings
- ``paths``         where the repo and serve_config/ are
"""
