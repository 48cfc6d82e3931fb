"""Entry point of the `speech-server` command (and of the modelrollout/model-server image).

Parses flags/env, loads one model version, serves HTTP on --host/--port until SIGTERM.
"""

from __future__ import annotations

import logging
import os
import sys


def main(argv: list[str] | None = None) -> None:
    # Concurrency comes from requests (batches on worker threads), not from BLAS: a multi-threaded
    # OpenBLAS made the log-mel matmul 8x slower on a busy 2-core machine. Must precede numpy's import.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from speech_serving.server.config import parse_settings

    settings = parse_settings(sys.argv[1:] if argv is None else argv)
    # kserve parses sys.argv when first imported; our flags are not its flags, so hide them from it.
    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        from speech_serving.server.app import build_uvicorn_server
        from speech_serving.server.model import SpeechModel
    finally:
        sys.argv = saved
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = SpeechModel(settings)
    model.load()
    if model.pipeline is None:
        raise SystemExit(f"speech-server: loading {settings.effective_model_uri} left no pipeline")
    logging.getLogger("speech_serving.server").info(
        "serving %s version %s (%s) on http://%s:%d",
        settings.model_name,
        settings.model_version,
        model.pipeline.recognizer.path,
        settings.host,
        settings.port,
    )
    build_uvicorn_server(model).run()


if __name__ == "__main__":
    main()
