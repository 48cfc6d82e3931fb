"""Writes a one-layer OCI image archive from a local file, without a registry or a builder.

Used for the real node's pod sandbox ("pause") image: a static binary as the whole image.
Entries carry fixed owners and times, so the same binary always gives the same image digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar_bytes(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar of `name -> (content, mode)` with root owners and mtime 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def compute_image_archive(name: str, binary: bytes, entrypoint: str) -> bytes:
    """The OCI archive (oci-layout, index.json, blobs) of an image holding only `binary`
    at `entrypoint`; `name` is the reference containerd imports it as."""
    layer = _tar_bytes({entrypoint.lstrip("/"): (binary, 0o755)})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": [entrypoint]},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": _digest(layer), "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    # containerd names the imported image after this annotation.
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    files = {"oci-layout": (b'{"imageLayoutVersion":"1.0.0"}', 0o644), "index.json": (index, 0o644)}
    for blob in (layer, config, manifest):
        files[f"blobs/sha256/{_digest(blob)[7:]}"] = (blob, 0o644)
    return _tar_bytes(files)
