#!/usr/bin/env bash
# `make images`: builds the operator, model-server and router images with buildah, exports OCI
# archives to ${MODELROLLOUT_CACHE:-~/.cache/modelrollout}/images/ and writes index.json there.
# Usage: images/build.sh [operator|model-server|router ...]     (default: all three; see images/README.md)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v python3 >/dev/null; then
  echo "images: step 'preflight' failed: python3 is not installed (apt-get install python3)" >&2
  exit 1
fi
exec python3 "$here/build.py" "$@"
