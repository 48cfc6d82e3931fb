"""Turn v1/v2 request bodies into float32 clips and pipeline results into v1/v2 response bodies.

Pure functions: every malformed input raises AudioError naming the field and what was expected.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import orjson

from speech_serving.audio import (
    AudioError,
    AudioLimits,
    check_clip_count,
    check_total_samples,
    decode_array,
    decode_audio_bytes,
    decode_base64,
    json_type_name,
)
from speech_serving.pipeline import ClipResult

V2_INPUT = "audio"
_V2_ARRAY_TYPES = {"INT16": np.int16, "FP32": np.float32}


def decode_json_body(body: bytes | bytearray) -> object:
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
        raise AudioError('instances: expected a non-empty list of {"audio_b64": "<base64 WAV or PCM16LE>"}')
    check_clip_count(len(instances), "instances", limits)
    clips, total = [], 0
    for i, item in enumerate(instances):
        field = f"instances[{i}].audio_b64"
        if not isinstance(item, dict) or "audio_b64" not in item:
            raise AudioError(f"{field}: missing; each instance must be an object with an 'audio_b64' string")
        clips.append(decode_audio_bytes(decode_base64(item["audio_b64"], field), field, limits))
        total += len(clips[-1])
        check_total_samples(total, limits)
    return clips


def parse_v2(inputs: list, limits: AudioLimits) -> list[np.ndarray]:
    """One input tensor: BYTES [N] (WAV/PCM16 files) or INT16/FP32 [N, samples] / [samples] → clips.

    `inputs` are KServe InferInput objects (name, datatype, shape, data or as_numpy()). The request limits
    are checked on the shape, before any sample is materialised.
    """
    if len(inputs) != 1:
        raise AudioError(f"inputs: expected exactly one input tensor named '{V2_INPUT}', got {len(inputs)}")
    tensor = inputs[0]
    field = f"inputs[{tensor.name!r}]"
    shape = _checked_shape(tensor.shape, field)
    if tensor.datatype == "BYTES":
        return _parse_v2_bytes(tensor, shape, field, limits)
    if tensor.datatype not in _V2_ARRAY_TYPES:
        raise AudioError(f"{field}: wrong datatype {tensor.datatype}, expected BYTES, INT16 or FP32")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] == 0):
        raise AudioError(f"{field}: wrong shape {shape}, expected [samples] or [clips, samples]")
    clips = 1 if len(shape) == 1 else shape[0]
    check_clip_count(clips, field, limits)
    check_total_samples(math.prod(shape), limits)
    array = _tensor_array(tensor, shape, field)
    if array.ndim == 1:
        return [decode_array(array, field, limits)]
    return [decode_array(array[i], f"{field}[{i}]", limits) for i in range(array.shape[0])]


def _checked_shape(shape: object, field: str) -> list[int]:
    if not isinstance(shape, list) or any(type(d) is not int or d < 0 for d in shape):
        raise AudioError(f"{field}.shape: wrong shape {shape!r}, dimensions must be non-negative integers")
    return shape


def _tensor_array(tensor, shape: list[int], field: str) -> np.ndarray:
    """The tensor's samples as INT16/FP32: JSON data checked element-wise, binary data as a zero-copy view."""
    if isinstance(tensor.data, list):
        return _json_array(tensor.data, tensor.datatype, shape, field)
    try:
        return tensor.as_numpy()
    except (ValueError, OverflowError, TypeError) as exc:
        raise AudioError(f"{field}: data does not fit shape {shape} and datatype {tensor.datatype} ({exc})") from None


_KIND_NAMES = {
    "b": "true/false",
    "U": "strings",
    "O": "null, objects, lists of uneven length or integers beyond 64 bits",
    "f": "numbers that are not integers (a fraction, an exponent or beyond 64 bits)",
    "c": "complex numbers",
}


def _json_array(data: list, datatype: str, shape: list[int], field: str) -> np.ndarray:
    """JSON numbers → the datatype's array; booleans, strings, nulls, fractions in INT16 and overflow are errors.

    numpy's own cast would turn true into 1, 0.5 into 0 and 70000 into an error message about C longs.
    """
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError, TypeError, RecursionError) as exc:
        raise AudioError(f"{field}.data: expected a list of numbers (flat or nested as the shape), {exc}") from None
    needed = math.prod(shape)
    if array.size != needed:
        raise AudioError(
            f"{field}: data does not fit shape {shape}: it holds {array.size} values, the shape needs {needed}"
        )
    if array.size == 0:
        return np.zeros(shape, dtype=_V2_ARRAY_TYPES[datatype])
    allowed = "iu" if datatype == "INT16" else "iuf"
    if array.dtype.kind not in allowed:
        wanted = "integers -32768..32767" if datatype == "INT16" else "numbers"
        raise AudioError(
            f"{field}.data: {datatype} data must be {wanted}, got {_KIND_NAMES.get(array.dtype.kind, str(array.dtype))}"
        )
    if datatype == "INT16":
        low, high = int(array.min()), int(array.max())
        if low < -32768 or high > 32767:
            raise AudioError(f"{field}.data: INT16 values must lie in -32768..32767, got {low}..{high}")
    with np.errstate(over="ignore"):  # a float beyond FP32 becomes Inf, which validate_samples refuses by name
        return array.astype(_V2_ARRAY_TYPES[datatype]).reshape(shape)


def _parse_v2_bytes(tensor, shape: list[int], field: str, limits: AudioLimits) -> list[np.ndarray]:
    count = math.prod(shape)
    check_clip_count(count, field, limits)
    if count == 0:
        raise AudioError(f"{field}: empty BYTES tensor, expected one WAV/PCM16 element per clip")
    if isinstance(tensor.data, list):
        elements = tensor.data
    else:
        try:
            elements = tensor.as_numpy().reshape(-1).tolist()
        except (ValueError, TypeError, struct.error) as exc:
            raise AudioError(f"{field}: binary BYTES data is not {count} length-prefixed elements ({exc})") from None
    if len(elements) != count:
        raise AudioError(
            f"{field}.data: holds {len(elements)} elements, shape {shape} needs {count} "
            "(a flat list, one element per clip)"
        )
    clips, total = [], 0
    for i, element in enumerate(elements):
        name = f"{field}[{i}]"
        # JSON carries text, so a JSON BYTES element is base64; the binary extension carries raw bytes.
        if isinstance(element, str):
            data = decode_base64(element, name)
        elif isinstance(element, (bytes, bytearray)):
            data = bytes(element)
        else:
            raise AudioError(
                f"{name}: expected a base64 string of a WAV file or PCM16LE audio, got {json_type_name(element)}"
            )
        clips.append(decode_audio_bytes(data, name, limits))
        total += len(clips[-1])
        check_total_samples(total, limits)
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
