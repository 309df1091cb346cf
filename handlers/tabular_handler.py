"""TorchServe handler for the tabular classifier.

Thin on purpose: parsing, validation and response shaping live in
``handlers.contract``; this class wires them to TorchServe's batch interface. Each
request in a batch is parsed on its own, the valid rows of all of them go through one
forward pass, and a bad request gets its own 4xx while the others get their answers.

Under KServe's TorchServe runtime the handler runs inside TorchServe's ``kserve`` or
``kservev2`` service envelope (``handlers.contract.envelopes``): it takes what the
envelope decoded, returns what the envelope wraps, and refuses bad input by raising
``PredictionException`` with the 4xx, the one way an envelope lets a handler set a status.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Any

import torch

from common.load_status import write_refusal
from common.model_card import METADATA_FILE, ModelCard, ModelCardError
from handlers import runtimes, worker_protocol
from handlers.contract import (
    ARRAY,
    JSON,
    Parsed,
    RequestError,
    Responder,
    answer_format,
    encode,
    parse_request,
    unsupported,
)
from handlers.contract.envelopes import (
    enveloped_error,
    enveloped_explanations,
    enveloped_output,
    forget_envelope_state,
    parse_enveloped,
    service_envelope,
)
from handlers.contract.model_schema import request_schema
from handlers.describe import DESCRIBED, Described, is_describe
from handlers.explain import Explainer, ExplainSettings, ExplanationRequest, is_explanation, no_explanations
from handlers.observability.observer import Batch, Observer
from handlers.observability.settings import ObservabilitySettings
from handlers.telemetry import Telemetry

runtimes.defer_onnxruntime()  # before BaseHandler's module imports onnxruntime at its load

from ts.torch_handler.base_handler import BaseHandler  # noqa: E402
from ts.utils.util import PredictionException  # noqa: E402

logger = logging.getLogger(__name__)
INTERNAL_ERROR = RequestError(500, "internal_error", "the server failed to read this request; see its model log")


class TabularHandler(BaseHandler):
    def initialize(self, context: Any) -> None:
        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler", {})
        threads = settings.get("torch_threads", 1)
        set_torch_threads(threads)
        self.reader = worker_protocol.install(bool(settings.get("buffered_reader", False)))
        self.envelope = service_envelope()
        card = checked_card(context)
        self.manifest = context.manifest
        self.model = load_model(context, card, threads)
        self.card = card
        self.schema = request_schema(card, settings)
        self.responder = Responder(
            model_name=context.model_name,
            model_version=str(context.manifest["model"].get("modelVersion", card.version)),
            class_names=card.class_names,
        )
        self.telemetry = Telemetry(
            context.model_name, self.responder.model_version, card,
            batch_size=int(context.system_properties.get("batch_size") or 1),
            max_rows=self.schema.max_rows,
        )  # fmt: skip
        with torch.inference_mode():  # the first call of a scripted module is slow
            self.model(torch.zeros(1, card.n_features))
        self.explainer: Explainer | None = None
        if self.model.differentiable is not None:
            self.explainer = Explainer(
                self.model.differentiable, card, ExplainSettings.from_config(settings.get("explain")),
                context.model_name, self.responder.model_version, self.schema,
            )  # fmt: skip
            self.explainer.warm_up()
        self.observer = Observer(
            ObservabilitySettings.from_config(settings.get("observability")), context.model_name,
            self.responder.model_version, card.feature_names, card.class_names, self.telemetry.log_write_failed,
        )  # fmt: skip
        self.initialized = True
        logging.getLogger().addFilter(quiet_per_batch_log)
        gc.freeze()  # model, modules, card live as long as the worker: no collection rescans them
        logger.info(
            "loaded %s %s (%s variant, %s): %d features, classes %s, %d torch threads, envelope %s, buffered reader %s",
            context.model_name,
            self.responder.model_version,
            card.variant,
            card.runtime,
            card.n_features,
            card.class_names,
            torch.get_num_threads(),
            self.envelope or "none",
            self.reader,
        )

    def handle(self, data: Any, context: Any) -> list[Any]:
        self.context = context
        if self.envelope is not None:
            return self.handle_enveloped(data, context, self.envelope)
        started = time.perf_counter()
        batch = self.observer.batch(len(data), lambda i, name: header(context, i, name), context.request_ids or {})
        parsed: list[Parsed | ExplanationRequest | RequestError | Described] = []
        explaining = {idx for idx in range(len(data)) if is_explanation(context, idx)}
        for idx, request in enumerate(data):
            if is_describe(context, idx, request):
                parsed.append(DESCRIBED)
                continue
            try:
                body, content_type = request_body(request, context, idx)
                p = parse_request(body, content_type, self.schema)
                if idx in explaining:  # only an explanation reads the request's headers (its options)
                    parsed.append(self.explanation_request(p, context.get_all_request_header(idx), body, content_type))
                else:
                    parsed.append(p)
            except RequestError as exc:
                parsed.append(exc.detached())
            except Exception:  # a bug, not the client's fault: this request alone fails
                logger.exception("unexpected error reading request %d of the batch (%s)", idx, batch.request_id(idx))
                parsed.append(INTERNAL_ERROR)
            batch.decoded(idx, rows_of(parsed[-1]))
        parsed_at = time.perf_counter()
        responses = self.answer(parsed, context, batch)
        batch.finish(skip=[i for i, p in enumerate(parsed) if p is DESCRIBED])
        if any(p is DESCRIBED for p in parsed):  # a management request, not traffic: no request metrics
            kept = [i for i, p in enumerate(parsed) if p is not DESCRIBED]
            parsed, explaining = [parsed[i] for i in kept], {n for n, i in enumerate(kept) if i in explaining}
        self.telemetry.batch(parsed, started, parsed_at, explanations=explaining)
        return responses

    def answer(
        self, parsed: list[Parsed | ExplanationRequest | RequestError | Described], context: Any, batch: Batch
    ) -> list[bytes | str]:
        valid = [p for p in parsed if isinstance(p, Parsed)]
        outputs = self.scored_requests(parsed, batch) if valid else []
        responses: list[bytes | str] = []
        it = iter(outputs)
        explained = iter(self.explanations(parsed, batch))
        for idx, p in enumerate(parsed):
            context.set_response_header(idx, "X-Model-Version", self.responder.model_version)
            if p is DESCRIBED:
                responses.append(self.describe_handle())
            elif isinstance(p, RequestError):
                responses.append(refusal(context, idx, p, batch))
            elif isinstance(p, ExplanationRequest):
                answer = next(explained)
                if isinstance(answer, RequestError):
                    parsed[idx] = answer  # counted as refused
                    responses.append(refusal(context, idx, answer, batch))
                    continue
                context.set_response_content_type(idx, JSON)
                responses.append(encode(answer))
                batch.answered(idx, 200)
            elif isinstance(p, Parsed):
                fmt = answer_format(header(context, idx, "Accept"))
                body, content_type = self.responder.render(p, next(it), fmt)
                context.set_response_content_type(idx, content_type)
                if fmt == ARRAY:
                    context.set_response_header(idx, "X-Class-Names", self.responder.class_names_header)
                responses.append(body)
                batch.answered(idx, 200)
        return responses

    def scored_requests(
        self, parsed: list[Parsed | ExplanationRequest | RequestError | Described], batch: Batch
    ) -> list[torch.Tensor]:
        """The probabilities of each valid request (in order), timed and sampled for the prediction log."""
        pairs = [(i, p) for i, p in enumerate(parsed) if isinstance(p, Parsed)]
        started = time.time_ns()
        outputs = list(self.score([p for _, p in pairs]))
        batch.scored([i for i, _ in pairs], started)
        self.observer.log_predictions(batch, [(i, p.rows, out) for (i, p), out in zip(pairs, outputs)])
        return outputs

    def explanations(
        self, parsed: list[Parsed | ExplanationRequest | RequestError | Described], batch: Batch
    ) -> list[dict[str, Any] | RequestError]:
        """One answer per explanation request (in order), timed as the batch's explain step."""
        pairs = [(i, p) for i, p in enumerate(parsed) if isinstance(p, ExplanationRequest)]
        if not pairs or self.explainer is None:
            return []
        started = time.time_ns()
        answers = self.explainer.explain([p for _, p in pairs])
        batch.scored([i for i, _ in pairs], started, explained=True)
        return answers

    def score(self, valid: list[Parsed]) -> tuple[torch.Tensor, ...]:
        """One forward pass over the rows of every valid request; probabilities per request."""
        with torch.inference_mode():
            x = torch.cat([p.rows for p in valid]) if len(valid) > 1 else valid[0].rows
            probabilities = torch.softmax(self.model(x), dim=1)
        self.telemetry.scored(x, probabilities)
        return tuple(probabilities.split([p.rows.shape[0] for p in valid]))

    def explanation_request(
        self, parsed: Parsed, headers: dict[str, Any], body: Any, content_type: str | None
    ) -> ExplanationRequest:
        """The request's explanation options checked, or the 400 of a variant without autograd."""
        if self.explainer is None:
            no_explanations(self.card)
        return self.explainer.request(parsed, headers, body, content_type)

    def handle_enveloped(self, data: Any, context: Any, envelope: str) -> list[Any]:
        """One request (what the envelope decoded from the batch's first) in, the outputs
        the envelope wraps out; a bad request raises PredictionException with its 4xx."""
        started = time.perf_counter()
        explaining = is_explanation(context, 0)
        try:
            rows = parse_enveloped(data, envelope, self.schema)
            # the envelope kept only the rows: explanation options come from the X-Explain-* headers
            headers = context.get_all_request_header(0)
            parsed: Parsed | ExplanationRequest | RequestError = (
                self.explanation_request(rows, headers, None, None) if explaining else rows
            )
        except RequestError as exc:
            parsed = exc.detached()
        except Exception:
            logger.exception("unexpected error reading an enveloped request")
            parsed = INTERNAL_ERROR
        parsed_at = time.perf_counter()
        kind = {0} if explaining else set()
        if isinstance(parsed, RequestError):
            error = enveloped_error(parsed)
            self.telemetry.batch([error], started, parsed_at, explanations=kind)
            forget_envelope_state(context)
            raise PredictionException(f"{error.type}: {error.message}", error.status)
        context.set_response_content_type(0, JSON)
        context.set_response_header(0, "X-Model-Version", self.responder.model_version)
        if isinstance(parsed, ExplanationRequest):
            assert self.explainer is not None  # explanation_request() made it
            (body,) = self.explainer.explain([parsed])
            assert not isinstance(body, RequestError)  # one request always fits (ExplainSettings.from_config)
            outputs = enveloped_explanations(envelope, body, self.card.feature_names)
        else:
            (probabilities,) = self.score([parsed])
            outputs = enveloped_output(envelope, probabilities, self.responder)
        self.telemetry.batch([parsed], started, parsed_at, explanations=kind)
        return outputs

    def describe_handle(self) -> str:
        """The model card for ``GET /models/<name>?customized=true``."""
        card = self.card.to_dict()
        card["serving"] = {"max_rows": self.schema.max_rows, "version": self.responder.model_version}
        return encode(card).decode()


def refusal(context: Any, idx: int, error: RequestError, batch: Batch) -> bytes:
    """A 4xx answer: the error's body with the request's ID, the one an operator greps the logs for."""
    context.set_response_content_type(idx, JSON)
    context.set_response_status(error.status, error.type, idx)
    batch.answered(idx, error.status, error.type)
    return encode({**error.to_dict(), "request_id": batch.request_id(idx)})


def rows_of(parsed: Parsed | ExplanationRequest | RequestError | Described) -> int:
    """The rows a request carries, for its access line, span and prediction record (0 when refused)."""
    if isinstance(parsed, ExplanationRequest):
        parsed = parsed.parsed
    return int(parsed.rows.shape[0]) if isinstance(parsed, Parsed) else 0


def load_model(context: Any, card: ModelCard, threads: int) -> runtimes.Runtime:
    """The model file loaded by the runtime the card names (handlers.runtimes), in place of
    BaseHandler.initialize, which loads only TorchScript and ONNX (the latter on every CPU)."""
    path = os.path.join(context.system_properties["model_dir"], context.manifest["model"]["serializedFile"])
    return runtimes.load(card.runtime, path, threads, autograd=card.variant_info.autograd)


def checked_card(context: Any) -> ModelCard:
    """The model card, after checking the model file against its sha256. A refusal is
    written where servectl looks (handlers.load_status) before it is raised, so servectl
    can say why at once instead of waiting out the worker's retries."""
    model_dir = context.system_properties["model_dir"]
    try:
        card = ModelCard.load(os.path.join(model_dir, METADATA_FILE))
        card.verify_model_file(os.path.join(model_dir, context.manifest["model"]["serializedFile"]))
    except ModelCardError as exc:
        write_refusal(context.model_name, str(exc))
        raise
    return card


def set_torch_threads(value: Any) -> None:
    """Intra-op threads per worker from model-config.yaml's ``handler.torch_threads``, the one
    place this is set: a deployment gives each pod workers x torch_threads CPUs. Inter-op
    threads stay at 1: the scripted model forks no parallel ops, so a wider inter-op pool
    would only add idle threads to every worker."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"handler.torch_threads in model-config.yaml: expected a positive integer, got {value!r}")
    torch.set_num_threads(value)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable once per process, before any inter-op work
            logger.warning("inter-op threads already fixed at %d", torch.get_num_interop_threads())


def quiet_per_batch_log(record: logging.LogRecord) -> bool:
    """Drop TorchServe's per-batch "Backend received inference at" INFO line: the frontend
    reads every worker line and writes it to model_log, which costs both processes CPU on
    each batch (benchmarks/README.md). Every other line, errors included, still goes out."""
    return not (isinstance(record.msg, str) and record.msg.startswith("Backend received inference"))


def request_body(request: dict[str, Any], context: Any, idx: int) -> tuple[Any, str | None]:
    """The payload and its content type from one TorchServe request.

    A raw body arrives as parameter "body"; a multipart upload as its field (use "data").
    Anything else is form data TorchServe split into fields: refused with a 415.
    """
    content_type = header(context, idx, "Content-Type")
    name = "body" if "body" in request else ("data" if "data" in request else None)
    if name is None:
        raise unsupported(content_type)
    param_headers = context.get_request_header(idx, name)
    part_type = param_headers.get("content-type") if isinstance(param_headers, dict) else None
    return request[name], part_type or content_type


def header(context: Any, idx: int, name: str) -> str | None:
    """A request header as the client spelled it or in lower case (TorchServe keeps the
    client's spelling; HTTP/2 proxies and some clients send lower case)."""
    value = context.get_request_header(idx, name) or context.get_request_header(idx, name.lower())
    return value if isinstance(value, str) else None
