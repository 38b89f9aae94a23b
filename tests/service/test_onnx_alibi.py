"""The ALiBi bias constant of an exported graph, rebuilt by nodes (service/backends/onnx_alibi.py): same
outputs bit for bit, a smaller file, and anything that is not exactly an ALiBi bias left as it was."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.backends.onnx_alibi import alibi_slopes, compute_alibi_in_graph

HEADS, LENGTH = 12, 64


def jina_slopes(heads: int) -> np.ndarray:
    """JinaBERT's `_get_alibi_head_slopes` (heads not a power of two included), negated as it stores them."""
    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        slopes = power_of_2(heads)
    else:
        closest = 2 ** math.floor(math.log2(heads))
        slopes = power_of_2(closest) + power_of_2(2 * closest)[0::2][: heads - closest]
    return -np.array(slopes, dtype=np.float32)


def alibi(heads: int = HEADS, length: int = LENGTH) -> np.ndarray:
    """The bias as the modeling code builds it: slopes (float32) times the integer distance |j - i|."""
    positions = np.arange(length)
    distance = np.abs(positions[None, :] - positions[:, None])
    return (jina_slopes(heads)[:, None, None] * distance[None]).astype(np.float32)[None]


def sliced_bias_graph(bias: np.ndarray, *, as_initializer: bool = False) -> onnx.ModelProto:
    """What tracing records: the full bias, sliced to the input's sequence length, added to the scores."""
    nodes = []
    initializers = []
    if as_initializer:
        initializers.append(numpy_helper.from_array(bias, "alibi"))
    else:
        nodes.append(helper.make_node("Constant", [], ["alibi"], value=numpy_helper.from_array(bias, "alibi_value")))
    initializers += [numpy_helper.from_array(np.array([0, 0], dtype=np.int64), "starts"),
                     numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")]
    nodes += [
        helper.make_node("Shape", ["scores"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["length"], axis=0),
        helper.make_node("Concat", ["length", "length"], ["ends"], axis=0),
        helper.make_node("Slice", ["alibi", "starts", "ends", "axes"], ["bias"]),
        helper.make_node("Add", ["scores", "bias"], ["biased"]),
    ]
    initializers.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "two"))
    graph = helper.make_graph(
        nodes, "attention", [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["b", HEADS, "s", "s"])],
        [helper.make_tensor_value_info("biased", TensorProto.FLOAT, ["b", HEADS, "s", "s"])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, scores: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"scores": scores})[0]


@pytest.mark.parametrize("as_initializer", [False, True], ids=["constant-node", "initializer"])
def test_rebuilt_bias_gives_the_same_outputs_bit_for_bit_from_a_smaller_file(as_initializer):
    bias = alibi()
    original = sliced_bias_graph(bias, as_initializer=as_initializer)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(original)

    assert compute_alibi_in_graph(rewritten.graph) == 1
    onnx.checker.check_model(rewritten, full_check=True)
    assert len(rewritten.SerializeToString()) < len(original.SerializeToString()) - bias.nbytes + 4096
    rng = np.random.default_rng(0)
    for length in (1, 7, LENGTH):
        scores = rng.standard_normal((2, HEADS, length, length), dtype=np.float32)
        np.testing.assert_array_equal(run(rewritten, scores), run(original, scores))
        np.testing.assert_array_equal(run(rewritten, scores), scores + bias[:, :, :length, :length])


def test_heads_not_a_power_of_two_are_recognised():
    bias = alibi(heads=6, length=16)
    np.testing.assert_array_equal(alibi_slopes(bias), jina_slopes(6))


@pytest.mark.parametrize("change", ["one value off", "not square", "float64", "no slope", "3-d"])
def test_anything_but_an_exact_alibi_bias_is_left_alone(change):
    bias = alibi()
    if change == "one value off":
        bias = bias.copy()
        bias[0, 3, 10, 20] = np.nextafter(bias[0, 3, 10, 20], np.float32(0))
    elif change == "not square":
        bias = np.ascontiguousarray(bias[:, :, :, : LENGTH - 1])
    elif change == "float64":
        bias = bias.astype(np.float64)
    elif change == "no slope":
        bias = np.zeros_like(bias)
    else:
        bias = bias[0]
    assert alibi_slopes(bias) is None
    graph = helper.make_graph([helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(bias, "v"))],
                              "g", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)])
    before = graph.SerializeToString()
    assert compute_alibi_in_graph(graph) == 0
    assert graph.SerializeToString() == before
