"""Writes a trained recognizer as a small ONNX graph with its normalisation and metadata inside.

Input `features` float32 [batch, 40, frames] (dynamic batch and frames, frames ≥ 4); output
`probabilities` float32 [batch, 12]; labels, feature config, version and summary in metadata_props.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from speech_serving.features import N_MELS, compute_feature_config_json
from speech_serving.training.model import KERNELS

OPSET = 17  # ReduceMax still takes `axes` as an attribute here; onnxruntime ≥ 1.14 runs it
IR_VERSION = 8
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"


def compute_metadata(labels, version: str, summary: dict, normalised: bool = True) -> dict[str, str]:
    """The metadata_props every shipped model carries (all values are strings, JSON where nested)."""
    return {
        "model_name": "speech-commands",
        "version": version,
        "labels": json.dumps(list(labels)),
        "feature_config": compute_feature_config_json(),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "normalisation": "in-graph per-band (x - mean) / std" if normalised else "none",
        "training_summary": json.dumps(summary, sort_keys=True),
    }


def _conv_block(helper, nodes, inits, i, source, pool):
    k = KERNELS[i - 1]
    nodes.append(
        helper.make_node(
            "Conv",
            [source, f"conv{i}.w", f"conv{i}.b"],
            [f"conv{i}"],
            kernel_shape=[k],
            pads=[k // 2, k // 2],
        )
    )
    nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
    if not pool:
        return f"relu{i}"
    nodes.append(helper.make_node("MaxPool", [f"relu{i}"], [f"pool{i}"], kernel_shape=[2], strides=[2]))
    return f"pool{i}"


def compute_onnx_model(params, mean, std, metadata: dict[str, str]):
    """Build the ModelProto; `mean`/`std` [40] are None to leave normalisation out of the graph."""
    import onnx  # the `train` extra; serving never needs it
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), name) for name, v in params.items()]
    nodes = []
    source = INPUT_NAME
    if mean is not None:
        inits.append(numpy_helper.from_array(np.asarray(mean, np.float32).reshape(1, N_MELS, 1), "norm.mean"))
        inits.append(numpy_helper.from_array((1.0 / np.asarray(std, np.float32)).reshape(1, N_MELS, 1), "norm.inv_std"))
        nodes.append(helper.make_node("Sub", [INPUT_NAME, "norm.mean"], ["centred"]))
        nodes.append(helper.make_node("Mul", ["centred", "norm.inv_std"], ["normalised"]))
        source = "normalised"
    for i in (1, 2, 3):
        source = _conv_block(helper, nodes, inits, i, source, pool=i < 3)
    nodes.append(helper.make_node("ReduceMax", [source], ["pooled"], axes=[2], keepdims=0))
    nodes.append(helper.make_node("MatMul", ["pooled", "dense.w"], ["dense"]))
    nodes.append(helper.make_node("Add", ["dense", "dense.b"], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1))
    n_classes = int(params["dense.b"].shape[0])
    graph = helper.make_graph(
        nodes,
        "speech_commands_cnn",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", N_MELS, "frames"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", n_classes])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="speech-train",
        doc_string="Keyword recognizer: log-mel [batch, 40, frames] -> class probabilities [batch, 12].",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model


def apply_onnx_file(model, path: pathlib.Path) -> int:
    """Write the model; returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    path.write_bytes(data)
    return len(data)
