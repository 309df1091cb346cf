"""The request contract of one model: its card and its ``handler`` settings to a ``Schema``.

Apart from the handler (which imports TorchServe) so that whatever scores outside TorchServe
with the same rules (``offline.spark`` on Spark executors) builds the very same schema.
"""

from __future__ import annotations

from common.model_card import ModelCard
from handlers.contract.validation import Schema


def request_schema(card: ModelCard, max_rows: int, input_range_widths: float | None) -> Schema:
    """The request contract of this model: its features, ``handler.max_rows``, and values
    bounded to ``handler.input_range_widths`` widths of the training range beyond it (None:
    float32's range only)."""
    if input_range_widths is None:
        return Schema(card.feature_names, max_rows)
    return Schema.bounded(card.feature_names, max_rows, card.training_range, float(input_range_widths))
