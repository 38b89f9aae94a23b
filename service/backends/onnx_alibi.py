"""The ALiBi bias of an exported JinaBERT-style graph, computed by the graph instead of stored in it.

Tracing JinaBERT records its ALiBi buffer (1 x heads x L x L floats, L = the export's max_length) as one
constant, which the graph then slices to each batch's length: 12.6 MB of the file at 12 heads and 512 tokens,
for a tensor that is entirely given by 12 slopes. `compute_alibi_in_graph` replaces every such constant
(a `Constant` node or an initializer) by the few nodes that rebuild it the way the modeling code does,
`slope[h] * |j - i|` in float32 (an integer distance, exact in float32, times the head's slope: the same single
rounding, so the values are bit for bit those of the constant; a tensor that does not equal that formula
exactly is left alone). ONNX Runtime folds the nodes back into a constant when it loads the graph, so memory
and speed are unchanged; only the file (and the image that ships it) is smaller.

Export-time only (needs the `onnx` package); the service never imports it.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger("service.onnx_alibi")


def alibi_slopes(tensor: np.ndarray) -> np.ndarray | None:
    """The per-head slopes if `tensor` is exactly an ALiBi bias (1 x heads x L x L, float32, value
    `slope[h] * |j - i|`), else None."""
    if tensor.dtype != np.float32 or tensor.ndim != 4 or tensor.shape[0] != 1:
        return None
    rows, cols = tensor.shape[2:]
    if rows != cols or rows < 2:
        return None
    slopes = tensor[0, :, 0, 1].copy()  # distance 1: the slope itself
    if not np.all(np.isfinite(slopes)) or not np.any(slopes):
        return None
    positions = np.arange(rows)
    distance = np.abs(positions[None, :] - positions[:, None]).astype(np.float32)
    if not np.array_equal(slopes[:, None, None] * distance[None, :, :], tensor[0]):
        return None
    return slopes


def _nodes(output: str, slopes: np.ndarray, length: int, prefix: str) -> list:
    """Nodes computing the 1 x heads x length x length bias into `output`, names under `prefix`."""
    from onnx import TensorProto, helper, numpy_helper

    def constant(name: str, value: np.ndarray):
        return helper.make_node("Constant", [], [f"{prefix}/{name}"], name=f"{prefix}/{name}",
                                value=numpy_helper.from_array(value, f"{prefix}/{name}_value"))

    def op(kind: str, inputs: list[str], name: str, **attributes):
        return helper.make_node(kind, [f"{prefix}/{i}" for i in inputs], [f"{prefix}/{name}"],
                                name=f"{prefix}/{name}", **attributes)

    return [
        constant("start", np.array(0, dtype=np.int64)),
        constant("limit", np.array(length, dtype=np.int64)),
        constant("delta", np.array(1, dtype=np.int64)),
        constant("axis0", np.array([0], dtype=np.int64)),
        constant("axis1", np.array([1], dtype=np.int64)),
        constant("slopes", slopes.reshape(1, -1, 1, 1).astype(np.float32)),
        op("Range", ["start", "limit", "delta"], "positions"),
        op("Unsqueeze", ["positions", "axis1"], "rows"),  # L x 1: the query position i
        op("Unsqueeze", ["positions", "axis0"], "cols"),  # 1 x L: the key position j
        op("Sub", ["cols", "rows"], "offset"),
        op("Abs", ["offset"], "distance_int"),
        op("Cast", ["distance_int"], "distance", to=TensorProto.FLOAT),
        op("Unsqueeze", ["distance", "axis0"], "distance_4d"),  # 1 x L x L
        helper.make_node("Mul", [f"{prefix}/slopes", f"{prefix}/distance_4d"], [output], name=f"{prefix}/bias"),
    ]


def compute_alibi_in_graph(graph) -> int:
    """Replace every ALiBi-bias constant of `graph` (an onnx.GraphProto, changed in place) by nodes that compute
    it; returns how many were replaced."""
    from onnx import numpy_helper

    replaced = 0
    for node in list(graph.node):
        if (node.op_type != "Constant" or len(node.attribute) != 1 or node.attribute[0].name != "value"
                or len(node.attribute[0].t.dims) != 4):
            continue
        tensor = numpy_helper.to_array(node.attribute[0].t)
        slopes = alibi_slopes(tensor)
        if slopes is None:
            continue
        position = list(graph.node).index(node)
        new = _nodes(node.output[0], slopes, tensor.shape[2], f"alibi_{replaced}")
        graph.node.remove(node)
        for offset, created in enumerate(new):
            graph.node.insert(position + offset, created)
        replaced += 1
    for initializer in list(graph.initializer):
        if len(initializer.dims) != 4:
            continue
        tensor = numpy_helper.to_array(initializer)
        slopes = alibi_slopes(tensor)
        if slopes is None:
            continue
        new = _nodes(initializer.name, slopes, tensor.shape[2], f"alibi_{replaced}")
        graph.initializer.remove(initializer)
        for listed in [i for i in graph.input if i.name == initializer.name]:  # IR < 4 lists initializers as inputs
            graph.input.remove(listed)
        for offset, created in enumerate(new):
            graph.node.insert(offset, created)
        replaced += 1
    if replaced:
        logger.info("ALiBi bias: %d constant(s) replaced by nodes that compute it", replaced)
    return replaced
