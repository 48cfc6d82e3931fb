"""The image -> local entrypoint mapping from e2e/testbed/images.yaml.

Placeholders in the argv are filled from the repo and cache locations at load time. Names
match exactly (kwok's stages select on the same strings), so no registry prefix is stripped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ..paths import IMAGES_FILE, REPO_ROOT, TESTBED_DIR, cache_root


def load_image_map(path: Path = IMAGES_FILE) -> dict[str, list[str]]:
    """Image name -> entrypoint argv with placeholders resolved; errors name the bad entry."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of image name to argv list")
    values = {
        "venv_bin": str(REPO_ROOT / ".venv" / "bin"),
        "python": sys.executable,
        "cache": str(cache_root()),
        "testbed": str(TESTBED_DIR),
        "repo": str(REPO_ROOT),
    }
    result = {}
    for image, argv in raw.items():
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"{path}: entry {image!r}: expected a non-empty list of strings, got {argv!r}")
        result[image] = [a.format(**values) for a in argv]
    return result
