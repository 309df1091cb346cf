"""Offline scoring: the served model and its request contract applied to tables where they live
(``offline.spark`` on Apache Spark), loaded from the same ``.mar`` (``offline.archive``)."""
