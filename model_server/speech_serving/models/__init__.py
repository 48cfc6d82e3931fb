"""The shipped recognizer versions (v1…v6): ONNX files, JSON/markdown model cards and index.json.

A package (not just a folder) so the files travel with a normal, non-editable install.
"""

from __future__ import annotations

import json
import pathlib

MODELS_DIR = pathlib.Path(__file__).resolve().parent


def load_index() -> dict:
    """index.json: {"model": ..., "versions": {version: {file, bytes, sha256, description, card}}}."""
    return json.loads((MODELS_DIR / "index.json").read_text())


def compute_model_path(version: str) -> pathlib.Path:
    """Path of a shipped version's ONNX file; a clear error lists the versions that exist."""
    versions = load_index()["versions"]
    if version not in versions:
        raise ValueError(f"model version: expected one of {', '.join(sorted(versions))}, got {version!r}")
    return MODELS_DIR / versions[version]["file"]


def load_card(version: str) -> dict:
    """The JSON model card of a shipped version (data, training settings, per-slice accuracy)."""
    compute_model_path(version)  # validates the name
    return json.loads((MODELS_DIR / load_index()["versions"][version]["card"]).read_text())
