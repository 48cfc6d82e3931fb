"""Server settings: one object, kebab-case flags, each with a SPEECH_SERVER_* environment variable.

Validated at startup with messages that name the flag, the bad value and what would be right.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from speech_serving.server.slices import SlicePolicy, compute_slice_problem

ENV_PREFIX = "SPEECH_SERVER_"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class ServerSettings:
    """Everything the model server can be told; defaults are the documented ones."""

    model_name: str = "speech-commands"  # the name in /v1/models/<name> and /v2/models/<name>
    model_version: str = "v2"  # reported in responses, the x-model-version header and metric labels
    model_uri: str = ""  # builtin:<version> or a path to an .onnx file; empty = builtin:<model_version>
    host: str = "127.0.0.1"
    port: int = 8080
    max_clip_seconds: float = 30.0  # longer clips get 400
    # Per-request bounds: one request's memory and pipeline time must not take the server down. Each clip is
    # scored in at least a 1 s window, so the clip count bounds the work a request of tiny clips causes (a
    # [20000, 1] INT16 request of 120 kB once took 29 s and 2 GB); the audio seconds bound long clips.
    max_clips_per_request: int = 64  # more clips in one request get 400
    max_request_audio_seconds: float = 120.0  # more audio in one request (sum over its clips) gets 400
    max_request_bytes: int = 8 * 1024 * 1024  # larger bodies get 413, before they are read in full
    max_batch: int = 16  # most clips one adaptive batch may hold
    inference_threads: int = 2  # batches run at once, each on its own thread (ORT releases the GIL)
    ort_threads: int = 1  # onnxruntime intra-op threads per session
    log_level: str = "info"
    # Slices (docs/model-server.md): a request names its slice in this header; values outside the allow-list are
    # `other`, a request without the header is `none`, so the `slice` metric label has at most len(slices) + 2 values.
    slice_header: str = "x-slice"
    slices: tuple[str, ...] = ()  # the allow-list (flag/env: a comma-separated list); empty = every request none/other

    @property
    def effective_model_uri(self) -> str:
        """An empty --model-uri serves the shipped model named like --model-version (the operator relies on it)."""
        return self.model_uri or f"builtin:{self.model_version}"

    @property
    def slice_policy(self) -> SlicePolicy:
        return SlicePolicy(self.slice_header.lower(), self.slices)


_HELP = {
    "model_name": "model name served under /v1/models/<name> and /v2/models/<name>",
    "model_version": "version string reported in responses, headers and metric labels",
    "model_uri": "builtin:<version> for a model shipped in speech_serving/models, or a path to an ONNX file;"
    " empty means builtin:<model-version>",
    "host": "address to bind (the pod IP in a cluster)",
    "port": "TCP port for HTTP",
    "max_clip_seconds": "longest accepted clip in seconds",
    "max_clips_per_request": "most clips accepted in one request",
    "max_request_audio_seconds": "most seconds of audio accepted in one request (all its clips together)",
    "max_request_bytes": "largest accepted request body in bytes",
    "max_batch": "most clips run together in one adaptive batch",
    "inference_threads": "pipeline batches that may run at once",
    "ort_threads": "onnxruntime intra-op threads per session",
    "log_level": "debug, info, warning or error",
    "slice_header": "request header that names the request's slice (matched case-insensitively)",
    "slices": "comma-separated allow-list of slice names (at most 16, each [a-z0-9][a-z0-9_-]{0,31});"
    " other values are counted as 'other', no header as 'none'",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speech-server", description="ONNX speech-command model server (KServe)")
    for f in fields(ServerSettings):
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        parser.add_argument(flag, dest=f.name, default=None, help=f"{_HELP[f.name]} (env {env}; default {f.default})")
    return parser


def parse_settings(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> ServerSettings:
    """Flags win over environment variables, which win over defaults; every value is validated."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}  # Any: _convert makes each value its field's type, which mypy cannot follow
    for f in fields(ServerSettings):
        raw = getattr(args, f.name)
        source = "--" + f.name.replace("_", "-")
        if raw is None and ENV_PREFIX + f.name.upper() in env:
            raw, source = env[ENV_PREFIX + f.name.upper()], ENV_PREFIX + f.name.upper()
        if raw is not None:
            values[f.name] = _convert(f.name, raw, source, type(f.default))
    settings = ServerSettings(**values)
    validate_settings(settings)
    return settings


def _convert(name: str, raw: str, source: str, kind: type) -> object:
    if kind is tuple:  # a comma-separated list; blanks around the names are dropped, the names checked later
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    try:
        return kind(raw)
    except ValueError:
        raise SystemExit(f"speech-server: {source}={raw!r} is not a valid {kind.__name__}") from None


def validate_settings(s: ServerSettings) -> None:
    """Exit with an actionable message on the first invalid setting."""
    checks = [
        (bool(s.model_name) and "/" not in s.model_name, "--model-name", "a non-empty name without '/'"),
        (bool(s.model_version), "--model-version", "a non-empty version string"),
        (0 < s.port < 65536, "--port", "a TCP port 1..65535"),
        (s.max_clip_seconds > 0, "--max-clip-seconds", "a positive number of seconds"),
        (1 <= s.max_clips_per_request <= 10_000, "--max-clips-per-request", "an integer 1..10000"),
        (
            s.max_request_audio_seconds >= s.max_clip_seconds,
            "--max-request-audio-seconds",
            f"at least --max-clip-seconds ({s.max_clip_seconds:g}), so one clip of the longest length is accepted",
        ),
        (s.max_request_bytes >= 1024, "--max-request-bytes", "at least 1024"),
        (1 <= s.max_batch <= 256, "--max-batch", "an integer 1..256"),
        (1 <= s.inference_threads <= 16, "--inference-threads", "an integer 1..16"),
        (1 <= s.ort_threads <= 16, "--ort-threads", "an integer 1..16"),
        (s.log_level in ("debug", "info", "warning", "error"), "--log-level", "debug, info, warning or error"),
    ]
    slice_problem = compute_slice_problem(s.slice_header, s.slices)
    if slice_problem is not None:
        checks.append((False, *slice_problem))
    for ok, flag, expected in checks:
        if not ok:
            value = getattr(s, flag[2:].replace("-", "_"))
            shown = ",".join(value) if isinstance(value, tuple) else value
            raise SystemExit(f"speech-server: {flag}={shown!r} is invalid; expected {expected}")
    resolve_model_uri(s.effective_model_uri)


def resolve_model_uri(uri: str) -> Path:
    """builtin:<version> → the shipped ONNX file; anything else is a path that must exist."""
    if uri.startswith("builtin:"):
        version = uri.split(":", 1)[1]
        for path in (MODELS_DIR / f"{version}.onnx", MODELS_DIR / version / "model.onnx"):
            if version and "/" not in version and path.is_file():
                return path
        shipped = sorted(p.stem for p in MODELS_DIR.glob("*.onnx")) if MODELS_DIR.is_dir() else []
        raise SystemExit(
            f"speech-server: model {uri!r} (--model-uri, or builtin:<--model-version> when it is empty) "
            f"is not shipped; shipped versions: {shipped}, or pass --model-uri=/path/to/model.onnx"
        )
    path = Path(uri.removeprefix("file://"))
    if not path.is_file():
        raise SystemExit(
            f"speech-server: --model-uri={uri!r}: file not found (expected builtin:<version> or an .onnx path)"
        )
    return path
