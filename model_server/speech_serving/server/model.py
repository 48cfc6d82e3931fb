"""The KServe `Model` for one speech-recognizer version: decode → adaptive batch → pipeline → answer.

v1 bodies arrive as dicts, v2 as KServe InferRequests; both return what the contract in docs/model-server.md says.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from speech_serving.audio import AudioError, AudioLimits, compute_level_dbfs
from speech_serving.metrics import ServerMetrics
from speech_serving.pipeline import SILENCE, SpeechPipeline, load_pipeline
from speech_serving.server.batching import AdaptiveBatcher
from speech_serving.server.config import ServerSettings, resolve_model_uri
from speech_serving.server.payloads import (
    V2_INPUT,
    compute_v1_response,
    compute_v2_outputs,
    decode_json_body,
    parse_v1,
    parse_v2,
)
from speech_serving.training.reference import Reference, fetch_reference

log = logging.getLogger("speech_serving.server")


class SpeechModel(Model):
    """Serves one recognizer version under `settings.model_name`."""

    def __init__(self, settings: ServerSettings, pipeline: SpeechPipeline | None = None):
        # return_response_headers: KServe then passes predict() a dict whose entries go on the answer (both paths).
        super().__init__(settings.model_name, return_response_headers=True)
        self.settings = settings
        self.slices = settings.slice_policy
        self.version = settings.model_version
        self.limits = AudioLimits(
            max_seconds=settings.max_clip_seconds,
            max_clips=settings.max_clips_per_request,
            max_total_seconds=settings.max_request_audio_seconds,
        )
        self.pipeline = pipeline
        self.metrics: ServerMetrics | None = None
        self.batcher: AdaptiveBatcher | None = None
        self.labels_header = ""  # x-model-labels: every answer this model can give, in the model's order
        self.reference: Reference | None = None  # the training-input distribution from the model card, if any

    def load(self) -> bool:
        if self.pipeline is None:
            self.pipeline = load_pipeline(
                resolve_model_uri(self.settings.effective_model_uri), self.settings.ort_threads
            )
        labels = self.pipeline.recognizer.labels
        check_header_labels(labels, self.settings.effective_model_uri)
        self.labels_header = ",".join(labels if SILENCE in labels else [*labels, SILENCE])
        self.metrics = ServerMetrics(self.name, self.version, labels, self.slices.values)
        self.reference, why = fetch_reference(self.pipeline.recognizer.path)
        if self.reference is None:
            log.info("model %s %s has no reference distribution: %s", self.name, self.version, why)
        self.metrics.set_reference(self.reference)
        self.batcher = AdaptiveBatcher(
            self.pipeline, self.settings.max_batch, self.settings.inference_threads, self.metrics.observe_batch
        )
        self.ready = True
        return self.ready

    def serving_problem(self) -> str | None:
        """Why this model cannot answer inference (None when it can); liveness, readiness and inference read it.

        Every state named here is permanent for the process, so liveness failing (a restart) is the remedy.
        """
        if not self.ready:
            return "the model is not loaded (or was stopped)"
        if self.batcher is None or self.batcher.closed:
            return "the pipeline workers are stopped"
        return None

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.ready = False

    async def predict(self, payload, headers=None, response_headers=None):
        """The answer for one request; `response_headers` gets x-predictions and x-model-labels (docs)."""
        start = time.perf_counter()
        is_v2 = isinstance(payload, InferRequest)
        try:
            if isinstance(payload, (bytes, bytearray)):
                payload = decode_json_body(payload)
            clips = parse_v2(payload.inputs, self.limits) if is_v2 else parse_v1(payload, self.limits)
        except AudioError as exc:
            raise InvalidInput(str(exc)) from None
        metrics, batcher = self.metrics, self.batcher
        if metrics is None or batcher is None:  # routes answer 503 before load() (serving_problem); a wiring bug
            raise RuntimeError(f"model {self.name!r}: predict() called before load()")
        levels = [compute_level_dbfs(c) for c in clips]
        metrics.observe_stage("decode", time.perf_counter() - start)
        results, times, _ = await batcher.submit(clips)
        slice_ = self.slices.compute_model_slice(headers)
        for result, level in zip(results, levels, strict=True):
            metrics.observe_clip(result, level, times, slice_)
        if response_headers is not None:
            response_headers["x-predictions"] = ",".join(r.label for r in results)
            response_headers["x-model-labels"] = self.labels_header
        if not is_v2:
            return compute_v1_response(results)
        outputs = [InferOutput(o["name"], o["shape"], o["datatype"], o["data"]) for o in compute_v2_outputs(results)]
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),  # KServe answers 500 to a v2 response without an id
            model_name=self.name,
            model_version=self.version,
            infer_outputs=outputs,
        )

    def get_input_types(self) -> list[dict]:
        return [{"name": V2_INPUT, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "confidence", "datatype": "FP32", "shape": [-1]},
            {"name": "segments", "datatype": "BYTES", "shape": [-1]},
        ]


HEADER_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_header_labels(labels: list[str], source: str) -> None:
    """Refuse a model whose labels cannot travel in the comma-separated x-predictions / x-model-labels headers."""
    for label in labels:
        if not HEADER_LABEL.fullmatch(label):
            raise ValueError(
                f"{source}: label {label!r} cannot be sent in the x-predictions header; expected 1-64 characters "
                "of letters, digits, '_', '.' or '-' (no commas, spaces or other characters)"
            )
