"""The KServe `Model` for one speech-recognizer version: decode → adaptive batch → pipeline → answer.

v1 bodies arrive as dicts, v2 as KServe InferRequests; both return what the contract in docs/model-server.md says.
"""

from __future__ import annotations

import time
import uuid

from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from speech_serving.audio import AudioError, AudioLimits, compute_level_dbfs
from speech_serving.metrics import ServerMetrics
from speech_serving.pipeline import SpeechPipeline, load_pipeline
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


class SpeechModel(Model):
    """Serves one recognizer version under `settings.model_name`."""

    def __init__(self, settings: ServerSettings, pipeline: SpeechPipeline | None = None):
        super().__init__(settings.model_name)
        self.settings = settings
        self.version = settings.model_version
        self.limits = AudioLimits(
            max_seconds=settings.max_clip_seconds,
            max_clips=settings.max_clips_per_request,
            max_total_seconds=settings.max_request_audio_seconds,
        )
        self.pipeline = pipeline
        self.metrics: ServerMetrics | None = None
        self.batcher: AdaptiveBatcher | None = None

    def load(self) -> bool:
        if self.pipeline is None:
            self.pipeline = load_pipeline(
                resolve_model_uri(self.settings.effective_model_uri), self.settings.ort_threads
            )
        self.metrics = ServerMetrics(self.name, self.version, self.pipeline.recognizer.labels)
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
        for result, level in zip(results, levels, strict=True):
            metrics.observe_clip(result, level, times)
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
