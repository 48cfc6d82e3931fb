"""Rebuilds the shipped keyword-recognizer ONNX models from synthetic speech (espeak-ng + sox).

Run `speech-train --help`; needs the `train` extra (onnx) and the Debian packages espeak-ng and sox.
"""
