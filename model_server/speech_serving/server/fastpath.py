"""Fast path for inference requests: parse with orjson, call the KServe Model, write bytes back.

KServe's REST stack (FastAPI routing, dependency solving, pydantic request/response models, dataplane
lookups) cost ~0.8 ms CPU per request against ~3 ms of pipeline; this skips it for the two hot routes.
The Model object and its preprocess/predict/postprocess flow are unchanged; everything else (health,
metadata, unknown model names) still goes through KServe's endpoints.
"""

from __future__ import annotations

import logging
import struct

import orjson
from kserve import InferInput, InferRequest, InferResponse
from kserve.errors import InvalidInput

from speech_serving.server.batching import BatcherClosed
from speech_serving.server.model import SpeechModel

log = logging.getLogger("speech_serving.server")
BINARY_HEADER = "inference-header-content-length"


class FastInference:
    """Answers `POST /v1/models/<m>:predict` and JSON `POST /v2/models/<m>/infer` for the served model."""

    def __init__(self, model: SpeechModel):
        self.model = model
        self.v1_path = f"/v1/models/{model.name}:predict"
        self.v2_path = f"/v2/models/{model.name}/infer"

    async def handle(self, scope, body: bytes, send) -> None:
        """Answer one inference request the gate let through (allow-listed path, this model's name)."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self.model.serving_problem()
        if problem is not None:
            return await _send_json(send, 503, {"error": f"model {self.model.name!r} cannot serve: {problem}"})
        try:
            payload = self._decode(scope["path"] == self.v2_path, body, headers)
            response, response_headers = await self.model(payload, headers)
            if isinstance(response, InferResponse):
                response, _ = response.to_rest()
            await _send_json(send, 200, response, response_headers)
        except InvalidInput as exc:
            log.info("rejected request: %s", exc)
            await _send_json(send, 400, {"error": str(exc)})
        except BatcherClosed as exc:
            await _send_json(send, 503, {"error": f"model {self.model.name!r} cannot serve: {exc}"})
        except Exception as exc:  # noqa: BLE001 - any other failure is ours: answer 500 and keep serving
            log.exception("inference failed")
            await _send_json(send, 500, {"error": f"{type(exc).__name__}: {exc}"})

    def _decode(self, is_v2: bool, body: bytes, headers: dict[str, str]):
        json_length = headers.get(BINARY_HEADER)
        raw = b""
        if is_v2 and json_length is not None:
            # str.isdigit() is true of '²' and '١', which int() then refuses (once a 500): ASCII digits only.
            if not (json_length.isascii() and json_length.isdigit()) or int(json_length) > len(body):
                raise InvalidInput(
                    f"{BINARY_HEADER}: expected the JSON header's byte length as ASCII digits "
                    f"(0..{len(body)}), got {json_length!r}"
                )
            body, raw = body[: int(json_length)], body[int(json_length) :]
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body: not valid JSON ({exc})") from None
        return compute_infer_request(parsed, self.model.name, raw, self.model.limits.max_clips) if is_v2 else parsed


def compute_infer_request(body: object, model_name: str, raw: bytes = b"", max_elements: int = 64) -> InferRequest:
    """A KServe InferRequest from a v2 JSON body (plus binary tensor data), checked as pydantic would.

    Binary tensors stay bytes (InferRequest raw_inputs → numpy.frombuffer); KServe's own from_bytes
    turns them into Python lists first, which costs more than the whole pipeline for a 1 s clip.
    """
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise InvalidInput("inputs: expected a JSON object with an 'inputs' list of tensors")
    _check_optional(body, "id", str, "a string")
    _check_optional(body, "parameters", dict, "an object")
    _check_optional(body, "outputs", list, "a list of requested outputs")
    inputs, raw_inputs, offset = [], [], 0
    for i, tensor in enumerate(body["inputs"]):
        infer_input, chunk, offset = _compute_input(tensor, f"inputs[{i}]", raw, offset, max_elements)
        inputs.append(infer_input)
        raw_inputs.append(chunk)
    if offset != len(raw):
        raise InvalidInput(
            f"binary data: {len(raw) - offset} bytes after the last binary tensor; the inputs' "
            f"parameters.binary_data_size must add up to the {len(raw)} bytes after the JSON header"
        )
    has_raw = any(chunk is not None for chunk in raw_inputs)
    return InferRequest(
        model_name,
        inputs,
        request_id=body.get("id"),
        parameters=body.get("parameters"),
        raw_inputs=raw_inputs if has_raw else None,
    )


def _compute_input(
    tensor: object, field: str, raw: bytes, offset: int, max_elements: int
) -> tuple[InferInput, bytes | None, int]:
    """One input tensor: the InferInput, its binary chunk (None for JSON data) and the next binary offset."""
    if not isinstance(tensor, dict):
        raise InvalidInput(f"{field}: expected a tensor object with name, datatype, shape and data")
    for key, kind in (("name", str), ("datatype", str), ("shape", list)):
        if not isinstance(tensor.get(key), kind):
            raise InvalidInput(f"{field}.{key}: missing or not a {kind.__name__}")
    _check_optional(tensor, "parameters", dict, "an object", field + ".")
    params = tensor.get("parameters") or {}
    size = params.get("binary_data_size")
    data, chunk = tensor.get("data"), None
    if not isinstance(data, list):
        if not (type(size) is int and 0 <= size <= len(raw) - offset):
            raise InvalidInput(
                f"{field}.data: missing or not a list (or parameters.binary_data_size not within "
                f"the {len(raw) - offset} binary bytes left)"
            )
        chunk, offset = raw[offset : offset + size], offset + size
        if tensor["datatype"] == "BYTES":  # elements as data: KServe's reader trusts the length prefixes
            data, chunk = split_bytes_elements(chunk, f"{field} (binary BYTES)", max_elements), None
    return InferInput(tensor["name"], tensor["shape"], tensor["datatype"], data, params), chunk, offset


def _check_optional(obj: dict, key: str, kind: type, expected: str, prefix: str = "") -> None:
    if obj.get(key) is not None and not isinstance(obj[key], kind):
        raise InvalidInput(f"{prefix}{key}: expected {expected}, got {type(obj[key]).__name__}")


def split_bytes_elements(raw: bytes, field: str, max_elements: int) -> list[bytes]:
    """A binary BYTES tensor's elements: each a 4-byte little-endian length, then that many bytes.

    KServe's deserialize_bytes_tensor raises struct.error on a length that lies (a 500) and reads every
    element before the count is checked; this stops at the first bad prefix or past `max_elements`.
    """
    elements: list[bytes] = []
    pos = 0
    while pos < len(raw):
        if len(elements) == max_elements:
            raise InvalidInput(
                f"{field}: more than {max_elements} elements; limit is {max_elements} clips per "
                "request (--max-clips-per-request)"
            )
        left = len(raw) - pos
        if left < 4:
            raise InvalidInput(f"{field}: element {len(elements)}: {left} bytes left, expected a 4-byte length prefix")
        (length,) = struct.unpack_from("<I", raw, pos)
        if length > left - 4:
            raise InvalidInput(
                f"{field}: element {len(elements)}: length prefix says {length} bytes, only "
                f"{left - 4} follow within parameters.binary_data_size"
            )
        elements.append(raw[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return elements


async def _send_json(send, status: int, content, extra_headers: dict[str, str] | None = None) -> None:
    data = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (extra_headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
