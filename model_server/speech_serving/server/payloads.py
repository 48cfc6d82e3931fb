"""Turn v1/v2 request bodies into float32 clips and pipeline results into v1/v2 response bodies.

Pure functions: every malformed input raises AudioError naming the field and what was expected.
"""

from __future__ import annotations

import json

import numpy as np
import orjson

from speech_serving.audio import AudioError, AudioLimits, decode_array, decode_audio_bytes, decode_base64
from speech_serving.pipeline import ClipResult

V2_INPUT = "audio"
_V2_ARRAY_TYPES = {"INT16": np.int16, "FP32": np.float32}


def decode_json_body(body: bytes) -> object:
    """KServe hands over the raw body when the content-type is not JSON (e.g. curl -d); parse it anyway."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AudioError(f"request body: not valid JSON ({exc}); send application/json") from None


def parse_v1(body: object, limits: AudioLimits) -> list[np.ndarray]:
    """{"instances": [{"audio_b64": "<base64 WAV or PCM16LE>"}, ...]} → clips."""
    if not isinstance(body, dict):
        raise AudioError(f"request body: expected a JSON object with 'instances', got {type(body).__name__}")
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise AudioError("instances: expected a non-empty list of {\"audio_b64\": \"<base64 WAV or PCM16LE>\"}")
    clips = []
    for i, item in enumerate(instances):
        field = f"instances[{i}].audio_b64"
        if not isinstance(item, dict) or "audio_b64" not in item:
            raise AudioError(f"{field}: missing; each instance must be an object with an 'audio_b64' string")
        clips.append(decode_audio_bytes(decode_base64(item["audio_b64"], field), field, limits))
    return clips


def parse_v2(inputs: list, limits: AudioLimits) -> list[np.ndarray]:
    """One input tensor: BYTES [N] (WAV/PCM16 files) or INT16/FP32 [N, samples] / [samples] → clips.

    `inputs` are KServe InferInput objects (name, datatype, shape, as_numpy()).
    """
    if len(inputs) != 1:
        raise AudioError(f"inputs: expected exactly one input tensor named '{V2_INPUT}', got {len(inputs)}")
    tensor = inputs[0]
    field = f"inputs[{tensor.name!r}]"
    if tensor.datatype == "BYTES":
        return _parse_v2_bytes(tensor, field, limits)
    if tensor.datatype not in _V2_ARRAY_TYPES:
        raise AudioError(f"{field}: wrong datatype {tensor.datatype}, expected BYTES, INT16 or FP32")
    array = _tensor_numpy(tensor, field)
    if array.ndim == 1:
        return [decode_array(array, field, limits)]
    if array.ndim != 2 or array.shape[0] == 0:
        raise AudioError(f"{field}: wrong shape {list(array.shape)}, expected [samples] or [clips, samples]")
    return [decode_array(array[i], f"{field}[{i}]", limits) for i in range(array.shape[0])]


def _tensor_numpy(tensor, field: str) -> np.ndarray:
    shape = list(tensor.shape)
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise AudioError(f"{field}: wrong shape {shape}, dimensions must be non-negative integers")
    try:
        array = tensor.as_numpy()
    except (ValueError, OverflowError, TypeError) as exc:
        raise AudioError(f"{field}: data does not fit shape {shape} and datatype {tensor.datatype} ({exc})") from None
    return array


def _parse_v2_bytes(tensor, field: str, limits: AudioLimits) -> list[np.ndarray]:
    array = _tensor_numpy(tensor, field).reshape(-1)
    if array.shape[0] == 0:
        raise AudioError(f"{field}: empty BYTES tensor, expected one WAV/PCM16 element per clip")
    clips = []
    for i, element in enumerate(array.tolist()):
        name = f"{field}[{i}]"
        # JSON carries text, so a JSON BYTES element is base64; the binary extension carries raw bytes.
        data = decode_base64(element, name) if isinstance(element, str) else bytes(element)
        clips.append(decode_audio_bytes(data, name, limits))
    return clips


def compute_v1_response(results: list[ClipResult]) -> dict:
    return {"predictions": [_result_dict(r) for r in results]}


def _result_dict(r: ClipResult) -> dict:
    return {"label": r.label, "confidence": r.confidence, "segments": [s.to_dict() for s in r.segments]}


def compute_v2_outputs(results: list[ClipResult]) -> list[dict]:
    """The v2 output tensors the router compares: label BYTES [N], confidence FP32 [N], segments BYTES [N]."""
    n = len(results)
    segments = [json.dumps([s.to_dict() for s in r.segments], separators=(",", ":")) for r in results]
    return [
        {"name": "label", "datatype": "BYTES", "shape": [n], "data": [r.label for r in results]},
        {"name": "confidence", "datatype": "FP32", "shape": [n], "data": [r.confidence for r in results]},
        {"name": "segments", "datatype": "BYTES", "shape": [n], "data": segments},
    ]
