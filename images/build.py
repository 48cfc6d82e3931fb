"""Builds the three images with buildah from their Dockerfiles and exports OCI archives.

Steps: preflight (root, tools), base (debootstrap, cached by recipe hash), router-binary, one
build and one export per image, index (index.json). Every failure names its step and its log.
Run through images/build.sh (`make images`); see images/README.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `images` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from images import catalog  # noqa: E402

# tool -> Debian package; podman reports image sizes here and runs images/smoke.sh.
TOOLS = {"buildah": "buildah", "skopeo": "skopeo", "debootstrap": "debootstrap", "podman": "podman"}
# A build step reaching PyPI behind a TLS-intercepting proxy needs the host's CA bundle; it is
# mounted for the RUN steps only (never copied into an image).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TIMEOUT_S = 1800  # the model server's cold pip install is the slowest step (~3 min measured)
LOG_TAIL_LINES = 25


_LOGS_THIS_RUN: set[Path] = set()


class StepFailed(Exception):
    """A step of the build failed; the message names the step, what failed and where the log is."""

    def __init__(self, step: str, detail: str):
        super().__init__(f"images: step {step!r} failed: {detail}")
        self.step, self.detail = step, detail


def say(message: str) -> None:
    print(f"images: {message}", flush=True)


def short_command(argv: list[str], words: int = 4) -> str:
    return " ".join(argv[:words]) + (" ..." if len(argv) > words else "")


def run_logged(step: str, argv: list[str], log: Path, timeout: float = BUILD_TIMEOUT_S, **kw) -> str:
    """Runs argv with output appended to `log`; returns stdout+stderr. A failure raises StepFailed
    with the command, its exit code and the log's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # Each log holds this run only (the first write of a run truncates it), so logs stay bounded.
    mode = "a" if log in _LOGS_THIS_RUN else "w"
    _LOGS_THIS_RUN.add(log)
    with log.open(mode) as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.run(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kw
            )
        except FileNotFoundError:
            raise StepFailed(step, f"{argv[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise StepFailed(step, f"`{short_command(argv)}` took longer than {timeout:g} s; log: {log}") from None
        out.write(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-LOG_TAIL_LINES:])
        raise StepFailed(step, f"`{short_command(argv)}` exited {proc.returncode}; full log: {log}\n{tail}")
    return proc.stdout


def ensure_preflight(logs: Path, euid: int) -> None:
    if euid != 0:
        raise StepFailed(
            "preflight", "needs root (buildah's storage, debootstrap's chroot); run `sudo make images`, or as root"
        )
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        say(f"installing Debian packages: {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            run_logged("install-tools", ["apt-get", "update", "-qq"], logs / "apt.log", env=env, timeout=600)
            run_logged(
                "install-tools",
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                logs / "apt.log",
                env=env,
                timeout=900,
            )
        except StepFailed as err:
            raise StepFailed(
                "install-tools",
                f"{err.detail}\ninstall them yourself: apt-get install {' '.join(missing)} (Debian 12 or newer)",
            ) from None
    if shutil.which("go") is None:
        raise StepFailed(
            "preflight",
            "the router binary is built on the host with Go >= 1.26 "
            "(model_server/traffic_router/build.sh); `go` is not on PATH",
        )


def image_exists(ref: str) -> bool:
    return (
        subprocess.run(
            ["buildah", "inspect", "--type", "image", ref], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ).returncode
        == 0
    )


def fetch_image_id(ref: str) -> str:
    out = subprocess.run(
        ["buildah", "images", "--no-trunc", "--format", "{{.ID}}", ref], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0]


def fetch_image_size(ref: str) -> int:
    """Uncompressed size in bytes (buildah prints only a rounded "29.6 MB"; podman the number)."""
    out = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", ref], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[-1])


def ensure_base(cache: Path, logs: Path) -> dict[str, str]:
    """The two local base images, named after the recipe's hash; debootstrap runs only when
    neither the images nor their cached tarballs exist."""
    key = catalog.compute_base_key(
        catalog.read_base_recipe(), catalog.DEBIAN_SUITE, catalog.debian_arch(platform.machine())
    )
    refs = catalog.compute_base_refs(key)
    if all(image_exists(ref) for ref in refs.values()):
        return refs
    rootfs_dir = cache / f"base-{catalog.DEBIAN_SUITE}-{key}"
    if not all((rootfs_dir / f"{name}.tar").is_file() for name in refs):
        say(f"base: debootstrap {catalog.DEBIAN_SUITE} into {rootfs_dir} (about 2 minutes; log {logs / 'base.log'})")
        run_logged("base", [str(catalog.IMAGES_DIR / "base.sh"), str(rootfs_dir)], logs / "base.log", timeout=1800)
    for name, ref in refs.items():
        run_logged(
            "base",
            [
                "buildah",
                "bud",
                "--pull=never",
                "--layers",
                "--timestamp",
                "0",
                "--build-arg",
                f"ROOTFS={name}.tar",
                "-f",
                str(catalog.IMAGES_DIR / "Containerfile.base"),
                "-t",
                ref,
                str(rootfs_dir),
            ],
            logs / "base.log",
        )
    return refs


def ensure_router_binary(logs: Path) -> Path:
    script = catalog.REPO_ROOT / "model_server/traffic_router/build.sh"
    out = run_logged("router-binary", [str(script)], logs / "router-binary.log", timeout=1800)
    return Path(out.strip().splitlines()[-1]).parent


def compute_build_plan(image: catalog.Image, base: dict[str, str], router_dir: Path) -> tuple[dict[str, str], Path]:
    """The build args and the build context of one image on this machine."""
    if image.base_arg == "RUNTIME_IMAGE":
        return {"RUNTIME_IMAGE": base["static"]}, router_dir
    args = {"BASE_IMAGE": base["python"]}
    if HOST_CA_BUNDLE.is_file():
        args["PIP_CERT"] = str(HOST_CA_BUNDLE)
    return args, catalog.REPO_ROOT


def fetch_input_digests(context: Path, inputs: tuple[str, ...]) -> dict[str, tuple[int, str]]:
    """relpath -> (mode, sha256) of every file a build COPYs, ignored paths left out."""
    files: dict[str, tuple[int, str]] = {}
    for top in inputs:
        root = context / top
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            rel = path.relative_to(context).as_posix()
            if not catalog.is_ignored(rel):
                files[rel] = (path.stat().st_mode & 0o777, hashlib.sha256(path.read_bytes()).hexdigest())
    return files


def build_image(image: catalog.Image, args: dict[str, str], context: Path, logs: Path) -> None:
    argv = [
        "buildah",
        "bud",
        "--pull=never",
        "--layers",
        "--timestamp",
        "0",
        "--network",
        "host",
        "-f",
        str(catalog.REPO_ROOT / image.dockerfile),
        "-t",
        catalog.local_ref(image.ref),
    ]
    if image.target:
        argv += ["--target", image.target]
    for name, value in args.items():
        argv += ["--build-arg", f"{name}={value}"]
    if "PIP_CERT" in args:
        argv += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    run_logged(f"build {image.name}", argv + [str(context)], logs / f"{image.name}.log")


def ensure_archive(image: catalog.Image, cache: Path, previous: dict, logs: Path, build_key: str) -> dict:
    local = catalog.local_ref(image.ref)
    image_id, size = fetch_image_id(local), fetch_image_size(local)
    archive = catalog.archive_path(image.name, cache)
    if not catalog.is_archive_current(previous.get(image.name), image_id, archive):
        tmp = archive.with_name(archive.name + ".tmp")
        tmp.unlink(missing_ok=True)
        run_logged(
            f"export {image.name}",
            [
                "skopeo",
                "copy",
                "--quiet",
                f"containers-storage:{local}",
                f"oci-archive:{tmp}:{catalog.qualify_ref(image.ref)}",
            ],
            logs / f"{image.name}.log",
            timeout=900,
        )
        tmp.replace(archive)
    return catalog.compute_index_entry(image, image_id, size, archive, build_key)


def main(argv: list[str]) -> int:
    names = argv or [image.name for image in catalog.IMAGES]
    cache = catalog.cache_dir()
    logs = cache / "logs"
    started = time.monotonic()
    try:
        images = [catalog.find_image(name) for name in names]
        ensure_preflight(logs, os.geteuid())
        base = ensure_base(cache, logs)
        say(f"base images: {base['python']}, {base['static']}")
        router_dir = ensure_router_binary(logs) if any(i.name == "router" for i in images) else Path()
        index = catalog.read_index(catalog.index_path(cache))
        base_ids = {ref: fetch_image_id(ref) for ref in base.values()}
        for image in images:
            t0 = time.monotonic()
            args, context = compute_build_plan(image, base, router_dir)
            key = catalog.compute_build_key(
                (catalog.REPO_ROOT / image.dockerfile).read_bytes(),
                fetch_input_digests(context, image.inputs),
                args,
                base_ids[args.get("BASE_IMAGE") or args["RUNTIME_IMAGE"]],
            )
            entry = index["images"].get(image.name) or {}
            local = catalog.local_ref(image.ref)
            # Same inputs as the image in storage was built from: buildah would only confirm its
            # cache (15-20 s for the model server: it digests the 500 MB venv to do so).
            fresh = (
                entry.get("build_key") == key and image_exists(local) and fetch_image_id(local) == entry.get("image_id")
            )
            if not fresh:
                build_image(image, args, context, logs)
            index["images"][image.name] = ensure_archive(image, cache, index["images"], logs, key)
            how = "unchanged" if fresh else "built"
            say(f"{image.name}: {index['images'][image.name]['image']} {how} in {time.monotonic() - t0:.1f} s")
        index["base_images"] = base
        # Written whole and renamed, so a reader (the testbed importing archives) never sees half.
        tmp = catalog.index_path(cache).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        tmp.replace(catalog.index_path(cache))
    except (StepFailed, KeyError) as err:
        print(err.args[0] if isinstance(err, KeyError) else err, file=sys.stderr, flush=True)
        return 1
    for entry in (index["images"][name] for name in names):
        print(f"{entry['image']:40} {entry['size_bytes'] / 1e6:7.1f} MB  {entry['archive']}")
    say(f"index: {catalog.index_path(cache)}; done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
