#!/usr/bin/env bash
# The recipe of the two local base images, as root-filesystem tarballs:
#   OUT_DIR/python.tar  Debian bookworm minbase + python3 (stand-in for python:3.11-slim), trimmed;
#   OUT_DIR/static.tar  CA bundle, passwd/group with 65532 and /tmp (stand-in for distroless/static).
# images/build.sh names the images after a hash of this file and Containerfile.base
# (images/catalog.py base-key), so editing the recipe is what makes a new base.
#
# Usage: images/base.sh OUT_DIR        (needs root: debootstrap chroots and sets file owners)
set -euo pipefail
out_dir="${1:?usage: images/base.sh OUT_DIR}"
suite=bookworm
mirror="${MODELROLLOUT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# python3-venv brings ensurepip's wheels, so `python3 -m venv` gives a venv with pip: that is how
# the Dockerfiles install, so the base needs no system pip (Debian's is EXTERNALLY-MANAGED anyway).
# passwd: the Dockerfiles' groupadd/useradd. ca-certificates: TLS to the API server and Prometheus.
packages=python3,python3-venv,ca-certificates,passwd

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/modelrollout-base.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >&2

# Trim what no container reads: docs (copyright files stay: they are the licences), man pages,
# translations, apt's package lists and caches, logs. Nothing here is needed to run Python.
find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/{man,info,lintian,linda,locale}/* \
       "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
       "$rootfs"/var/cache/ldconfig/aux-cache "$rootfs"/var/log/* "$rootfs"/root/.cache \
       "$rootfs"/tmp/* "$rootfs"/var/tmp/*
# Keep later `apt-get install`s in derived images from bringing docs and man pages back.
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/01-modelrollout-nodoc" <<'CFG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
CFG
# The tarball's mtimes are all 0 (and `buildah --timestamp 0` resets them anyway), which makes
# Debian's timestamp-checked .pyc files stale: Python would recompile the standard library on every
# start and, on a read-only root filesystem, never manage to save it. Unchecked-hash .pyc files don't
# look at mtimes; only the files Debian compiled are rewritten, so the image does not grow.
chroot "$rootfs" python3 - <<'PYC'
import pathlib, py_compile, sys
tag = f".{sys.implementation.cache_tag}.pyc"
for pyc in pathlib.Path("/usr/lib").rglob(f"__pycache__/*{tag}"):
    source = pyc.parent.parent / (pyc.name[: -len(tag)] + ".py")
    if source.is_file():
        py_compile.compile(str(source), cfile=str(pyc), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
PYC

static="$(mktemp -d "${TMPDIR:-/tmp}/modelrollout-static.XXXXXX")"
trap 'rm -rf "$rootfs" "$static"' EXIT
mkdir -p "$static/etc/ssl/certs" "$static/tmp"
chmod 1777 "$static/tmp"
cp "$rootfs/etc/ssl/certs/ca-certificates.crt" "$static/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' \
  > "$static/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$static/etc/group"

# Sorted names, numeric owners and one fixed mtime, so the same packages give the same tarball.
mkdir -p "$out_dir"
for name in python static; do
  src="$rootfs"; [[ "$name" == static ]] && src="$static"
  tar --sort=name --numeric-owner --mtime='@0' -C "$src" -cf "$out_dir/$name.tar.tmp" .
  mv "$out_dir/$name.tar.tmp" "$out_dir/$name.tar"
done
