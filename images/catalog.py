"""The project's container images in one place: names, Dockerfiles, base-image keys, archive paths.

Pure (no subprocess): images/build.py drives buildah/skopeo from these; tests/unit/test_images.py
checks them. Stdlib only, so the system python3 runs it before any venv exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = Path(__file__).resolve().parent

# The local base images stand in for python:3.11-slim and distroless/static. Their names say what
# they are (built here from Debian bookworm) and carry the recipe's hash, so a changed recipe makes
# a new image instead of silently replacing the old one, and nothing claims an upstream name.
DEBIAN_SUITE = "bookworm"
BASE_RECIPE_FILES = ("base.sh", "Containerfile.base")
BASE_PYTHON_REPO = "localhost/modelrollout-base-python"
BASE_STATIC_REPO = "localhost/modelrollout-base-static"
BASE_KEY_LENGTH = 12

# The scratch mounts a pod needs when its root filesystem is read-only (measured with
# images/smoke.sh: `podman diff` after a run with a writable root, then a run with --read-only).
SCRATCH_MOUNTS = {"operator": ("/tmp",), "model-server": ("/tmp",), "router": ()}


@dataclasses.dataclass(frozen=True)
class Image:
    """One image `make images` builds: where its Dockerfile is and what the chart calls it."""

    name: str  # short name: archive file, log file, index key
    ref: str  # the chart's default image (what pods say in `image:`)
    chart_value: str  # the values.yaml key holding `ref`
    dockerfile: str  # relative to the repo root
    base_arg: str  # the build ARG naming its base image
    # What the Dockerfile COPYs from its build context (relative to the repo root; for the router,
    # to its prebuilt binary's directory). With the Dockerfile, the build args and the base image
    # they make the build key: an unchanged key skips buildah (tests check these match the COPYs).
    inputs: tuple[str, ...]
    # Stage built on our machines (None: the last one). The router's `prebuilt` stage takes the
    # binary built on the host instead of compiling Go inside a container (see its Dockerfile).
    target: str | None = None


IMAGES = (
    Image(
        "operator",
        "modelrollout/operator:dev",
        "image.repository + image.tag",
        "operator/Dockerfile",
        "BASE_IMAGE",
        ("pyproject.toml", "README.md", "operator"),
    ),
    Image(
        "model-server",
        "modelrollout/model-server:dev",
        "operator.modelServerImage",
        "model_server/Dockerfile.model-server",
        "BASE_IMAGE",
        ("pyproject.toml", "README.md", "model_server"),
    ),
    Image(
        "router",
        "modelrollout/router:dev",
        "operator.routerImage",
        "model_server/Dockerfile.router",
        "RUNTIME_IMAGE",
        ("router",),
        target="prebuilt",
    ),
)

# Build-context paths the Dockerfiles never see (the repo's .dockerignore says the same; a test
# checks): bytecode and caches that test runs leave next to the sources.
IGNORED_NAMES = ("__pycache__", ".pytest_cache", ".hypothesis")
IGNORED_SUFFIXES = (".pyc", ".egg-info")


def is_ignored(relpath: str) -> bool:
    return any(part in IGNORED_NAMES or part.endswith(IGNORED_SUFFIXES) for part in relpath.split("/"))


def compute_build_key(
    dockerfile: bytes, files: dict[str, tuple[int, str]], build_args: dict[str, str], base_image_id: str
) -> str:
    """Content hash of everything a build reads: the Dockerfile, each context file's path, mode and
    sha256 (`files`: relpath -> (mode, digest)), the build args and the base image's ID."""
    digest = hashlib.sha256(dockerfile)
    for path in sorted(files):
        mode, file_digest = files[path]
        digest.update(f"\0{path}\0{mode:o}\0{file_digest}".encode())
    for name in sorted(build_args):
        digest.update(f"\0arg {name}={build_args[name]}".encode())
    digest.update(f"\0base {base_image_id}".encode())
    return digest.hexdigest()


def find_image(name: str) -> Image:
    for image in IMAGES:
        if image.name == name:
            return image
    known = ", ".join(i.name for i in IMAGES)
    raise KeyError(f"unknown image {name!r}; the images are: {known}")


def cache_dir() -> Path:
    """Where archives, base tarballs, logs and index.json live (the project's cache root + images/)."""
    root = os.environ.get("MODELROLLOUT_CACHE") or Path.home() / ".cache" / "modelrollout"
    return Path(root) / "images"


def archive_path(name: str, root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"{name}.oci.tar"


def index_path(root: Path | None = None) -> Path:
    return (root or cache_dir()) / "index.json"


def compute_base_key(recipe: dict[str, bytes], suite: str, arch: str) -> str:
    """Content hash of the base recipe: every file's name and bytes, the Debian suite and the
    architecture. The same recipe gives the same key on any machine; any edit gives a new one."""
    digest = hashlib.sha256()
    for name in sorted(recipe):
        digest.update(f"{name}\0{len(recipe[name])}\0".encode())
        digest.update(recipe[name])
    digest.update(f"suite={suite}\0arch={arch}\0".encode())
    return digest.hexdigest()[:BASE_KEY_LENGTH]


def debian_arch(machine: str) -> str:
    """Debian's architecture name for `platform.machine()` (debootstrap fetches that one)."""
    names = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "ppc64le": "ppc64el", "s390x": "s390x"}
    if machine not in names:
        raise ValueError(f"machine {machine!r} has no known Debian architecture; expected one of {sorted(names)}")
    return names[machine]


def read_base_recipe(images_dir: Path = IMAGES_DIR) -> dict[str, bytes]:
    return {name: (images_dir / name).read_bytes() for name in BASE_RECIPE_FILES}


def compute_base_refs(key: str, suite: str = DEBIAN_SUITE) -> dict[str, str]:
    return {"python": f"{BASE_PYTHON_REPO}:{suite}-{key}", "static": f"{BASE_STATIC_REPO}:{suite}-{key}"}


def qualify_ref(ref: str) -> str:
    """The fully qualified name Kubernetes (and containerd) give a short image name:
    `modelrollout/router:dev` -> `docker.io/modelrollout/router:dev`, `busybox` ->
    `docker.io/library/busybox`. Archives are named with it so an import matches what pods pull."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if sep else f"docker.io/library/{ref}"


def local_ref(ref: str) -> str:
    """The name buildah stores a short name under in containers-storage."""
    return ref if ref.startswith("localhost/") else f"localhost/{ref}"


def is_archive_current(entry: dict | None, image_id: str, archive: Path) -> bool:
    """True when `archive` exists and the index says it was exported from `image_id`, so the export
    (tens of seconds for the model server) can be skipped. A missing or changed file re-exports."""
    if not entry or entry.get("image_id") != image_id or not archive.is_file():
        return False
    return archive.stat().st_size == entry.get("archive_bytes")


def read_index(path: Path) -> dict:
    """The last written index, or an empty one (first run, or a file from an older layout)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"images": {}}
    return data if isinstance(data.get("images"), dict) else {"images": {}}


def compute_index_entry(image: Image, image_id: str, size_bytes: int, archive: Path, build_key: str = "") -> dict:
    return {
        "build_key": build_key,
        "image": qualify_ref(image.ref),
        "short_name": image.ref,
        "local_name": local_ref(image.ref),
        "chart_value": image.chart_value,
        "dockerfile": image.dockerfile,
        "image_id": image_id,
        "size_bytes": size_bytes,
        "archive": str(archive),
        "archive_bytes": archive.stat().st_size if archive.is_file() else None,
        "scratch_mounts": list(SCRATCH_MOUNTS[image.name]),
    }


def main(argv: list[str]) -> int:
    """`python3 images/catalog.py base-key|paths`: for shell scripts (images/smoke.sh)."""
    if argv == ["base-key"]:
        import platform

        arch = debian_arch(platform.machine())
        print(compute_base_key(read_base_recipe(), DEBIAN_SUITE, arch))
    elif argv == ["paths"]:
        for image in IMAGES:
            print(image.name, local_ref(image.ref), archive_path(image.name), sep="\t")
    else:
        print("usage: python3 images/catalog.py base-key|paths", flush=True)
        return 2
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
