"""Shared helpers for the speech-server tests: a tiny recognizer ONNX and real espeak-ng clips.

The tiny model has the shipped models' I/O (features [B,40,frames] → probabilities [B,12]) and metadata.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

LABELS = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def write_tiny_recognizer(
    path: Path,
    labels: list[str] | None = LABELS,
    feature_config: str | None = None,
    seed: int = 0,
    always: str | None = None,
) -> Path:
    """Max-pool over frames, one dense layer, softmax; random but fixed weights, or always one label."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from speech_serving import features

    rng = np.random.default_rng(seed)
    n_out = len(labels) if labels else 12
    w = (rng.standard_normal((40, n_out)) * 0.05).astype(np.float32)
    b = np.zeros(n_out, dtype=np.float32)
    if always is not None:  # zero weights and one large bias: that label at ~0.99 for any input
        w[:] = 0.0
        b[LABELS.index(always)] = 7.0
    weight = numpy_helper.from_array(w, "W")
    bias = numpy_helper.from_array(b, "b")
    axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("ReduceMax", ["features", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["logits0"]),
        helper.make_node("Add", ["logits0", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 40, "frames"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_out])],
        initializer=[weight, bias, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    meta = {"feature_config": feature_config or features.compute_feature_config_json()}
    if labels is not None:
        meta["labels"] = json.dumps(labels)
    for key, value in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.save(model, str(path))
    return path


def make_reference(counts: dict[str, dict[str, int]], predictions: dict[str, int]) -> dict:
    """A model card's `reference` by hand: counts per `le` of each input histogram (other buckets 0), answers."""
    from speech_serving.metrics import REFERENCE_INPUTS, compute_le_labels

    histograms = {}
    for name, buckets in REFERENCE_INPUTS.items():
        le = compute_le_labels(buckets)
        histograms[name] = {"le": le, "counts": [counts.get(name, {}).get(x, 0) for x in le]}
    n = sum(predictions.values())
    return {"n": n, "inputs": "by hand", "method": "by hand", "histograms": histograms, "predictions": predictions}


def write_model_card(model_path: Path, reference: dict | None, sha256: str | None = None) -> Path:
    """`<stem>.json` next to a model file, as speech-train writes it (the file's sha256), with `reference`."""
    import hashlib

    card: dict = {"version": model_path.stem, "sha256": sha256 or hashlib.sha256(model_path.read_bytes()).hexdigest()}
    if reference is not None:
        card["reference"] = reference
    path = model_path.with_suffix(".json")
    path.write_text(json.dumps(card))
    return path


def synthesize_word(word: str, pad_s: float = 0.3) -> np.ndarray:
    """int16 16 kHz mono speech from espeak-ng + sox (both Debian packages in the Makefile)."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        raise RuntimeError("espeak-ng and sox are needed (make sysdeps)")
    wav = subprocess.run(["espeak-ng", "--stdout", word], check=True, capture_output=True).stdout
    raw = subprocess.run(
        [
            "sox",
            "-t",
            "wav",
            "-",
            "-t",
            "raw",
            "-r",
            "16000",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-",
            "pad",
            str(pad_s),
            str(pad_s),
        ],
        input=wav,
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype="<i2").copy()


def make_speech_model(model_path: Path, **overrides):
    """A loaded SpeechModel (the KServe Model) for `model_path` with test-sized limits."""
    from speech_serving.server.config import ServerSettings
    from speech_serving.server.model import SpeechModel

    settings = ServerSettings(model_uri=str(model_path), **overrides)
    model = SpeechModel(settings)
    model.load()
    return model


class ServedApp:
    """An ASGI app served by a real uvicorn on 127.0.0.1 (ephemeral port) inside the test's event loop."""

    def __init__(self, app):
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.url = ""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ServedApp:
        task = self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_) -> None:
        self.server.should_exit = True
        if self._task is not None:  # set by __aenter__
            await self._task


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v2_body(datatype: str, shape: list, data: list, **extra) -> dict:
    """An Open Inference Protocol v2 request with one `audio` input; `extra` adds top-level keys."""
    return {"inputs": [{"name": "audio", "datatype": datatype, "shape": shape, "data": data}], **extra}
