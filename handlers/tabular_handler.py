"""TorchServe handler for the tabular classifier.

Thin on purpose: ``initialize`` builds the worker's parts once from the typed settings
(``handlers.settings``) and the model card, and ``handle`` hands each batch to the one request
pipeline (``handlers.pipeline``: decode, choose, score, encode), through TorchServe's own frames
or, under KServe's TorchServe runtime, its ``kserve``/``kservev2`` envelope
(``handlers.transports``). Parsing, validation and answers live in ``handlers.contract``.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import torch

from common.load_status import write_refusal
from common.model_card import METADATA_FILE, ModelCard, ModelCardError
from handlers import quiet_lines, runtimes, settings, worker_protocol
from handlers.contract import Responder, encode
from handlers.contract.envelopes import service_envelope
from handlers.contract.model_schema import request_schema
from handlers.explain import Explainer
from handlers.observability.observer import Observer
from handlers.pipeline import Pipeline, Transport
from handlers.telemetry import Telemetry
from handlers.transports import Direct, Enveloped

runtimes.defer_onnxruntime()  # before BaseHandler's module imports onnxruntime at its load

from ts.torch_handler.base_handler import BaseHandler  # noqa: E402

logger = logging.getLogger(__name__)


class TabularHandler(BaseHandler):
    def initialize(self, context: Any) -> None:
        config = settings.from_config(getattr(context, "model_yaml_config", None))
        set_torch_threads(config.torch_threads)
        self.reader = worker_protocol.install(config.buffered_reader)
        envelope = service_envelope()
        card = checked_card(context)
        self.manifest = context.manifest
        self.card = card
        self.model = load_model(context, card, config.torch_threads)
        self.schema = request_schema(card, config.max_rows, config.input_range_widths)
        self.responder = Responder(
            model_name=context.model_name,
            model_version=str(context.manifest["model"].get("modelVersion", card.version)),
            class_names=card.class_names,
        )
        version = self.responder.model_version
        telemetry = Telemetry(
            context.model_name, version, card,
            batch_size=int(context.system_properties.get("batch_size") or 1), max_rows=config.max_rows,
        )  # fmt: skip
        with torch.inference_mode():  # the first call of a scripted module is slow
            self.model(torch.zeros(1, card.n_features))
        explainer = None
        if self.model.differentiable is not None:
            explainer = Explainer(
                self.model.differentiable, card, config.explain, context.model_name, version, self.schema
            )
            explainer.warm_up()
        observer = Observer(
            config.observability, context.model_name, version, card.feature_names, card.class_names,
            telemetry.log_write_failed,
        )  # fmt: skip
        transport: Transport = (
            Direct(self.schema, self.responder, self.describe_handle)
            if envelope is None
            else Enveloped(envelope, self.schema, self.responder, card.feature_names)
        )
        self.pipeline = Pipeline(transport, self.model, card, explainer, telemetry, observer)
        self.initialized = True
        quiet_lines.install()
        gc.freeze()  # model, modules, card live as long as the worker: no collection rescans them
        gc.set_threshold(config.gc_young_threshold, *gc.get_threshold()[1:])
        logger.info(
            "loaded %s %s (%s variant, %s): %d features, classes %s, %d torch threads, envelope %s, buffered reader %s",
            context.model_name, version, card.variant, card.runtime, card.n_features, card.class_names,
            torch.get_num_threads(), envelope or "none", self.reader,
        )  # fmt: skip

    def handle(self, data: Any, context: Any) -> list[Any]:
        self.context = context
        return self.pipeline.run(data, context)

    def describe_handle(self) -> str:
        """The model card for ``GET /models/<name>?customized=true``."""
        card = self.card.to_dict()
        card["serving"] = {"max_rows": self.schema.max_rows, "version": self.responder.model_version}
        return encode(card).decode()


def load_model(context: Any, card: ModelCard, threads: int) -> runtimes.Runtime:
    """The model file loaded by the runtime the card names (handlers.runtimes), in place of
    BaseHandler.initialize, which loads only TorchScript and ONNX (the latter on every CPU)."""
    path = os.path.join(context.system_properties["model_dir"], context.manifest["model"]["serializedFile"])
    return runtimes.load(card.runtime, path, threads, autograd=card.variant_info.autograd)


def checked_card(context: Any) -> ModelCard:
    """The model card, after checking the model file against its sha256. A refusal is
    written where servectl looks (common.load_status) before it is raised, so servectl
    can say why at once instead of waiting out the worker's retries."""
    model_dir = context.system_properties["model_dir"]
    try:
        card = ModelCard.load(os.path.join(model_dir, METADATA_FILE))
        card.verify_model_file(os.path.join(model_dir, context.manifest["model"]["serializedFile"]))
    except ModelCardError as exc:
        write_refusal(context.model_name, str(exc))
        raise
    return card


def set_torch_threads(threads: int) -> None:
    """Intra-op threads per worker from model-config.yaml's ``handler.torch_threads`` (checked
    by handlers.settings), the one place this is set: a deployment gives each pod workers x
    torch_threads CPUs. Inter-op threads stay at 1: the scripted model forks no parallel ops,
    so a wider inter-op pool would only add idle threads to every worker."""
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable once per process, before any inter-op work
            logger.warning("inter-op threads already fixed at %d", torch.get_num_interop_threads())
