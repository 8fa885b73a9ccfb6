"""An ONNX graph run by PyTorch, its weights and quantization scales trainable: quantization-aware training
of the very Q/DQ graph that is deployed (the ``qat_onnx`` stage), and the graph's arithmetic as written (the
reference the INT8 host benchmark and tests compare runtimes with).

:class:`QdqGraph` reads an ONNX graph (FP32, or INT8 Q/DQ as the ``quantize`` stage writes it) and runs it
node by node with PyTorch operators, so that the fit loop can train it:

* every ``QuantizeLinear -> DequantizeLinear`` pair on an activation is a fake quantizer that computes what
  the pair computes (``(clamp(round_half_even(x / s) + z, qmin, qmax) - z) * s``), with the straight-through
  estimator for the rounding and its scale ``s`` trainable (LSQ's gradient, Esser et al. ICLR 2020; learnt as
  ``s0 * exp(r)`` from the graph's ``s0``, so that it stays positive and is exactly ``s0`` until it trains). Zero points stay fixed: ONNX Runtime drops a ReLU whose quantizer
  range starts at zero, and a trained zero point would break that;
* every quantized weight (INT8 initializer + ``DequantizeLinear``, per channel) becomes a float parameter
  fake-quantized with its own trainable per-channel scale; an INT32 bias is a float parameter quantized with
  the scale ONNX Runtime requires (input scale x weight scale, recomputed from the trained scales);
* a quantized convolution (DQ -> Conv -> Q, INT8 weight, INT32 bias) has the value ONNX Runtime's
  QLinearConv gives it: exact integer sums, one float32 requantization (the float path gives the gradient);
  a float convolution of dequantized values rounds a few outputs per million the other way, and a network
  without an image skip (IMDN-RTC) amplifies one such flip to ~40 dB at its output;
* float convolutions (layers a mixed-precision graph keeps in float) and PReLU slopes train as floats;
  pixel shuffles written as ConvTranspose (0/1 weights) and every other constant stay fixed.

:meth:`QdqGraph.to_onnx` writes the trained numbers back into a copy of the original graph: the same nodes,
the same Q/DQ placement, so the same kernels and speed in every runtime as the post-training quantized graph
it started from. Only the operators SR students export to are implemented; any other is refused by name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from .errors import EdgesrError

__all__ = ["QdqGraph", "QdqGraphError", "fake_quantize", "SUPPORTED_OPS"]


class QdqGraphError(EdgesrError, ValueError):
    """A graph the PyTorch simulation cannot run as ONNX defines it; the message names the node and why."""

_QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127), np.dtype(np.int32): (-2 ** 31, 2 ** 31 - 1)}


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """QuantizeLinear then DequantizeLinear, differentiable: round half to even (as ONNX), the rounding passed
    straight through, saturation stopping the gradient of ``x`` (and giving ``scale`` LSQ's gradient)."""
    v = x / scale
    q = torch.clamp(v + (torch.round(v) - v).detach() + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def _t(a) -> torch.Tensor:
    """A float32 tensor of a numpy array or scalar (0-d included)."""
    return torch.tensor(np.asarray(a, np.float32))


def _channel_view(t: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """A per-channel (1-D) tensor shaped to broadcast along ``axis`` of an ``ndim``-D tensor."""
    if t.ndim == 0:
        return t
    shape = [1] * ndim
    shape[axis] = -1
    return t.view(shape)


class _ActQuant(nn.Module):
    """An activation's QuantizeLinear -> DequantizeLinear pair (per tensor, or per axis).

    ``train_zero_point``: the zero point trains too (LSQ+'s learnable offset, Bhalgat et al. CVPRW 2020), as
    a float rounded in the forward pass with the straight-through estimator; only where the graph's zero point
    lies strictly inside the integer range (an asymmetric range around zero, e.g. before a LeakyReLU, whose
    negative half the activation shrinks): a zero point at the range's end marks a range that starts at zero
    (ONNX Runtime drops a ReLU there) and a symmetric quantizer's zero point must stay 0."""

    def __init__(self, scale: np.ndarray, zero_point: np.ndarray, axis: int, train_scale: bool,
                 train_zero_point: bool = False):
        super().__init__()
        dtype = np.asarray(zero_point).dtype
        if np.size(scale) == 1:  # a one-element scale is per tensor
            scale, zero_point = np.reshape(scale, ()), np.reshape(zero_point, ())
        self.register_buffer("scale0", _t(scale))
        self.log_ratio = nn.Parameter(torch.zeros_like(self.scale0), requires_grad=train_scale)
        self.register_buffer("zero_point", _t(zero_point))
        self.qmin, self.qmax = _QRANGE[dtype]
        inside = bool(np.all((np.asarray(zero_point) > self.qmin) & (np.asarray(zero_point) < self.qmax)))
        self.zero_offset = nn.Parameter(torch.zeros_like(self.zero_point),
                                        requires_grad=bool(train_zero_point and inside and dtype == np.uint8))
        self.axis = axis

    def scale(self) -> torch.Tensor:
        return self.scale0 * self.log_ratio.exp()  # exactly the graph's scale until it trains

    def zp(self) -> torch.Tensor:
        """The integer zero point the graph gets: the graph's, or the trained one (offset rounded half to even,
        kept inside the range; straight-through gradient)."""
        if not self.zero_offset.requires_grad:
            return self.zero_point
        z = torch.clamp(self.zero_point + self.zero_offset, self.qmin + 1, self.qmax - 1)
        return z + (torch.round(z) - z).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _channel_view(self.scale(), self.axis, x.ndim)
        z = _channel_view(self.zp(), self.axis, x.ndim)
        return fake_quantize(x, s, z, self.qmin, self.qmax)


class _QuantWeight(nn.Module):
    """A quantized initializer (weight or bias): the dequantized values as a float parameter, fake-quantized
    with its scale at every forward."""

    def __init__(self, q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int, *, train: bool,
                 train_scale: bool, symmetric_range: bool):
        super().__init__()
        if np.size(scale) == 1:  # a one-element scale is per tensor
            scale, zero_point = np.reshape(scale, ()), np.reshape(zero_point, ())
        self.axis = axis if np.ndim(scale) else 0
        s = _channel_view(_t(scale), self.axis, q.ndim)
        z = _channel_view(_t(zero_point), self.axis, q.ndim)
        self.value = nn.Parameter((torch.from_numpy(q.astype(np.float64)).float() - z) * s, requires_grad=train)
        self.register_buffer("scale0", _t(scale))
        self.log_ratio = nn.Parameter(torch.zeros_like(self.scale0), requires_grad=train_scale)
        self.register_buffer("zero_point", _t(zero_point))
        self.dtype = q.dtype
        self.qmin, self.qmax = _QRANGE[q.dtype]
        if symmetric_range and q.dtype == np.int8 and not np.any(zero_point) and q.size and q.min() > -128:
            # ONNX Runtime's symmetric INT8 weights use [-127, 127], its 7-bit ones (reduce_range) [-64, 64]: the
            # range the graph came with is kept, so that training cannot turn 7-bit weights into 8-bit ones
            # (which overflow int16 pair sums on x86 CPUs without VNNI).
            bound = 64 if int(np.abs(q.astype(np.int32)).max()) <= 64 else 127
            self.qmin, self.qmax = -bound, bound
        self.derived_scale = None  # for an INT32 bias: a function giving input scale x weight scale

    def scale(self) -> torch.Tensor:
        return self.derived_scale() if self.derived_scale is not None else self.scale0 * self.log_ratio.exp()

    def forward(self) -> torch.Tensor:
        ndim = self.value.ndim
        s = _channel_view(self.scale(), self.axis, ndim)
        z = _channel_view(self.zero_point, self.axis, ndim)
        return fake_quantize(self.value, s, z, self.qmin, self.qmax)

    def centered_integers(self) -> torch.Tensor:
        """``q - z`` as the graph holds it (what an integer kernel multiplies), as float64, no gradient."""
        with torch.no_grad():
            ndim = self.value.ndim
            s = _channel_view(self.scale(), self.axis, ndim)
            z = _channel_view(self.zero_point, self.axis, ndim)
            v = self.value / s  # the same float32 operations as fake_quantize: the same integers
            return (torch.clamp(torch.round(v) + z, self.qmin, self.qmax) - z).double()

    def quantized(self) -> tuple[np.ndarray, np.ndarray]:
        """The integer tensor and the scale to write back."""
        with torch.no_grad():
            ndim = self.value.ndim
            s = self.scale()
            v = self.value / _channel_view(s, self.axis, ndim) + _channel_view(self.zero_point, self.axis, ndim)
            q = torch.clamp(torch.round(v.double()), self.qmin, self.qmax).numpy().astype(self.dtype)
            return q, s.numpy().astype(np.float32)


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv_padding(x: torch.Tensor, a: dict, kernel: tuple[int, ...]) -> tuple[torch.Tensor, int | tuple]:
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", "VALID"):
        raise QdqGraphError(f"Conv auto_pad {auto} is not supported by the Q/DQ trainer; export with explicit pads")
    pads = list(a.get("pads", [0] * (2 * len(kernel))))
    n = len(pads) // 2
    begin, end = pads[:n], pads[n:]
    if begin == end:
        return x, tuple(begin)
    pad = []
    for b, e in zip(reversed(begin), reversed(end)):
        pad += [b, e]
    return F.pad(x, pad), 0


def _resize(x: torch.Tensor, node, a: dict, args: list) -> torch.Tensor:
    """``args``: the node's inputs as computed (constants, or sizes computed from Shape, as RLFN's ESA resizes
    its pooled map back to the size of its input)."""
    mode = a.get("mode", b"nearest").decode()
    ctm = a.get("coordinate_transformation_mode", b"half_pixel").decode()
    args = list(args) + [None] * (4 - len(args))
    scales = args[2].tolist() if args[2] is not None and args[2].numel() else None
    sizes = args[3].tolist() if args[3] is not None and args[3].numel() else None
    if scales is None and sizes is None:
        raise QdqGraphError(f"Resize {node.name}: a Resize needs scales or sizes")
    if scales is not None and len(scales) and (scales[0] != 1 or scales[1] != 1):
        raise QdqGraphError(f"Resize {node.name}: resizing batch or channels is not supported")
    kw = {"scale_factor": tuple(float(s) for s in scales[2:])} if scales is not None and len(scales) else \
        {"size": tuple(int(s) for s in sizes[2:])}
    if mode == "nearest":
        if ctm != "asymmetric" and "scale_factor" in kw and all(float(s).is_integer() for s in kw["scale_factor"]):
            return F.interpolate(x, **kw, mode="nearest")  # integer factor: every convention picks the same pixel
        if ctm == "asymmetric" and a.get("nearest_mode", b"round_prefer_floor").decode() == "floor":
            return F.interpolate(x, **kw, mode="nearest")
        raise QdqGraphError(f"Resize {node.name}: nearest with {ctm} is not supported by the Q/DQ trainer")
    if ctm not in ("half_pixel", "pytorch_half_pixel") or a.get("exclude_outside", 0):
        raise QdqGraphError(f"Resize {node.name}: {mode} with {ctm} is not supported by the Q/DQ trainer")
    if mode == "linear" and x.ndim == 4:
        return _linear_resize(x, scales[2:] if scales is not None and len(scales) else None,
                              sizes[2:] if sizes is not None else None, ctm)
    if mode == "cubic" and abs(a.get("cubic_coeff_a", -0.75) + 0.75) < 1e-9:
        return F.interpolate(x, **kw, mode="bicubic", align_corners=False)
    raise QdqGraphError(f"Resize {node.name}: mode {mode} is not supported by the Q/DQ trainer")


def _linear_axis(n_in: int, n_out: int, scale: float, ctm: str):
    """ONNX Runtime's bilinear sampling along one axis (upsamplebase.h, float32 throughout): source coordinate
    (o + 0.5) / scale - 0.5 clamped to [0, n_in - 1], neighbours i1 = trunc, i2 = min(i1 + 1, n_in - 1), weights
    |c - i1| and |c - i2| (0.5 each where they coincide)."""
    c = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) / np.float32(scale) - np.float32(0.5)
    if ctm == "pytorch_half_pixel" and n_out == 1:
        c[:] = 0
    c = np.clip(c, np.float32(0), np.float32(n_in - 1)).astype(np.float32)
    i1 = np.minimum(c.astype(np.int64), n_in - 1)
    i2 = np.minimum(i1 + 1, n_in - 1)
    d1 = np.abs(c - i1.astype(np.float32)).astype(np.float32)
    d2 = np.abs(c - i2.astype(np.float32)).astype(np.float32)
    d1[i1 == i2], d2[i1 == i2] = 0.5, 0.5
    return torch.from_numpy(i1), torch.from_numpy(i2), torch.from_numpy(d1), torch.from_numpy(d2)


def _linear_resize(x: torch.Tensor, scales, sizes, ctm: str) -> torch.Tensor:
    """Bilinear Resize of an N x C x H x W tensor computed as ONNX Runtime computes it, bit for bit: PyTorch's
    ``interpolate`` sums the same four products in another order, and on quantized inputs about 0.5 % of its
    outputs then round to the other integer at the next QuantizeLinear (interpolated values land on exact halves)
    -- which RLFN's attention, multiplying the whole feature map by a resized gate, spreads to the output
    (simulation vs runtime 45 dB instead of exact). Differentiable (indexing and products)."""
    h, w = x.shape[2:]
    if sizes is not None:
        oh, ow = int(sizes[0]), int(sizes[1])
        sh, sw = np.float32(oh) / np.float32(h), np.float32(ow) / np.float32(w)
    else:
        sh, sw = np.float32(scales[0]), np.float32(scales[1])
        oh, ow = int(np.floor(h * float(sh))), int(np.floor(w * float(sw)))
    y1, y2, dy1, dy2 = _linear_axis(h, oh, sh, ctm)
    x1, x2, dx1, dx2 = _linear_axis(w, ow, sw, ctm)
    rows1, rows2 = x.index_select(2, y1), x.index_select(2, y2)
    x11, x21 = rows1.index_select(3, x1), rows1.index_select(3, x2)
    x12, x22 = rows2.index_select(3, x1), rows2.index_select(3, x2)
    dx1, dx2 = dx1.to(x.dtype).view(1, 1, 1, -1), dx2.to(x.dtype).view(1, 1, 1, -1)
    dy1, dy2 = dy1.to(x.dtype).view(1, 1, -1, 1), dy2.to(x.dtype).view(1, 1, -1, 1)
    return dx2 * dy2 * x11 + dx1 * dy2 * x21 + dx2 * dy1 * x12 + dx1 * dy1 * x22


def _unsupported(n) -> torch.Tensor:
    raise QdqGraphError(f"{n.op_type} ({n.name}) in this form is not supported by the Q/DQ trainer")


SUPPORTED_OPS = ("Conv", "ConvTranspose", "Relu", "PRelu", "LeakyRelu", "Sigmoid", "Tanh", "Add", "Sub", "Mul", "Div",
                 "Clip", "Concat", "DepthToSpace", "Resize", "ReduceSum", "Identity", "Constant", "Shape", "MaxPool",
                 "Split", "Slice", "Gather", "Pad", "Reshape", "Squeeze", "Unsqueeze", "QuantizeLinear",
                 "DequantizeLinear")


class QdqGraph(nn.Module):
    """``proto`` run by PyTorch (input ``lr``, outputs in graph order: one tensor, or a tuple for several).

    ``train_scales``: the quantizers' scales are trained too (else only the weights). ``train_zero_points``
    (with ``train_scales``): the activation quantizers' zero points too, where the graph's lies inside the
    integer range (see :class:`_ActQuant`). ``frozen``: node names whose weights stay fixed (besides
    pixel-shuffle ConvTransposes, which always do).

    A new graph is in eval mode: it computes what ONNX Runtime computes (DQ -> Conv -> Q as the integer kernel,
    see :meth:`_integer_convs`), for validation, parity checks and every other use. In training mode (the
    training loop's steps only) those convolutions give the float path's values, which differ from the integer
    kernel's by one step at about one output in 10^6: the same gradients to within that, and ~1.2x faster
    steps (benchmarks/results/qat_step/)."""

    def __init__(self, proto: onnx.ModelProto, scales: tuple[int, ...], *, train_scales: bool = True,
                 frozen: tuple[str, ...] = (), train_zero_points: bool = False):
        super().__init__()
        from edgesr.onnxutil import shuffle_nodes

        self.proto = copy.deepcopy(proto)
        self.scales, self.scale = tuple(scales), scales[0]
        graph = self.proto.graph
        unsupported = sorted({n.op_type for n in graph.node if n.op_type not in SUPPORTED_OPS})
        if unsupported:
            raise QdqGraphError(f"the Q/DQ trainer does not implement {unsupported}; it runs {list(SUPPORTED_OPS)}")
        if len(graph.input) != 1:
            raise QdqGraphError(f"the Q/DQ trainer takes graphs with one input (lr), got {[i.name for i in graph.input]}")
        self.input_name = graph.input[0].name
        self.output_names = [o.name for o in graph.output]
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant":
                inits[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
        self._consts = inits
        consumers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        keep_fixed = set(shuffle_nodes(self.proto)) | set(frozen)
        self.params = nn.ModuleDict()    # name of the tensor it produces -> _QuantWeight
        self.acts = nn.ModuleDict()      # name of the Q node -> _ActQuant
        self.floats = nn.ParameterDict()  # float initializers that train (float conv weights, PReLU slopes)
        self._keys: dict[str, str] = {}  # tensor / node name -> module key (ModuleDict keys cannot hold dots)
        self._act_of: dict[str, str] = {}  # QuantizeLinear node name -> key of its quantizer in self.acts
        self._plan: list = []
        producers = {o: n for n in graph.node for o in n.output}
        quant_inputs = self._quantizers(graph, inits, consumers, producers, keep_fixed, train_scales,
                                        train_zero_points)
        self._tie_int32_biases(graph, quant_inputs)
        self._integer_conv = self._integer_convs(graph, consumers, quant_inputs)
        self.eval()

    #: The zero points' learning rate as a multiple of the run's (Adam moves a parameter by about its rate per
    #: step): at qat_onnx's usual 1e-4, an integer step in ~40 training steps, where scales (trained as logs)
    #: change by ~0.4 % in as many.
    ZERO_POINT_LR_SCALE = 256.0

    def optimizer_groups(self) -> list[dict]:
        """Parameter groups for :func:`edgesr.fitting.fit`: the trained zero points at their own rate."""
        zps = [p for n, p in self.named_parameters() if n.endswith("zero_offset") and p.requires_grad]
        rest = [p for n, p in self.named_parameters() if not n.endswith("zero_offset")]
        return [{"params": rest}, {"params": zps, "lr_scale": self.ZERO_POINT_LR_SCALE}]

    def _key(self, name: str) -> str:
        """The module key of a tensor or node name (ModuleDict keys cannot hold dots), in order of first use."""
        return self._keys.setdefault(name, f"t{len(self._keys)}")

    def _quantizers(self, graph, inits: dict, consumers: dict, producers: dict, keep_fixed: set,
                    train_scales: bool, train_zero_points: bool = False) -> dict:
        """A trainable module per quantized initializer, activation quantizer and trained float initializer, and
        the execution plan; returns DQ output tensor -> the Q node whose pair it ends."""
        quant_inputs = {}  # DQ output tensor -> the Q node whose pair it ends
        for n in graph.node:
            if n.op_type == "DequantizeLinear" and n.input[0] in inits:
                users = consumers.get(n.output[0], [])
                a = _attrs(n)
                q = inits[n.input[0]]
                scale = inits[n.input[1]]
                zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros_like(scale, dtype=q.dtype)
                trainable = any(u.op_type in ("Conv", "ConvTranspose") and u.name not in keep_fixed for u in users)
                self.params[self._key(n.output[0])] = _QuantWeight(q, scale, zp, a.get("axis", 1), train=trainable,
                                                             train_scale=trainable and train_scales and q.dtype != np.int32,
                                                             symmetric_range=True)
                self._plan.append(("param", n, None))
            elif n.op_type == "QuantizeLinear":
                users = consumers.get(n.output[0], [])
                if not users or any(u.op_type != "DequantizeLinear" for u in users):
                    raise QdqGraphError(f"QuantizeLinear {n.name}: its output feeds {[u.op_type for u in users]}; the "
                                        "Q/DQ trainer takes Q/DQ pairs (QuantizeLinear -> DequantizeLinear) only")
                scale = inits[n.input[1]]
                zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros((), np.uint8)
                # Quantizers that share a scale initializer share one trained scale: ONNX Runtime's quantizer
                # ties a Resize's output to its input that way (FSRCNN's chroma path), and the written graph can
                # hold only one value for it.
                akey = self._key(f"scale:{n.input[1]}")
                if akey not in self.acts:
                    self.acts[akey] = _ActQuant(scale, zp, _attrs(n).get("axis", 1), train_scales,
                                                train_zero_points and train_scales)
                self._act_of[n.name] = akey
                for u in users:
                    quant_inputs[u.output[0]] = n
                self._plan.append(("act", n, None))
            elif n.op_type == "DequantizeLinear":
                if n.input[0] not in producers or producers[n.input[0]].op_type != "QuantizeLinear":
                    raise QdqGraphError(f"DequantizeLinear {n.name}: its input is neither an initializer nor a "
                                        "QuantizeLinear output")
                self._plan.append(("dq", n, None))
            elif n.op_type == "Constant":
                continue
            else:
                self._plan.append(("op", n, None))
                if n.op_type in ("Conv", "ConvTranspose", "PRelu") and n.name not in keep_fixed:
                    for idx in ((1, 2) if n.op_type != "PRelu" else (1,)):
                        if len(n.input) > idx and n.input[idx] in inits and inits[n.input[idx]].dtype == np.float32 \
                                and self._key(n.input[idx]) not in self.floats:
                            self.floats[self._key(n.input[idx])] = nn.Parameter(torch.from_numpy(inits[n.input[idx]].copy()))
        return quant_inputs

    def _tie_int32_biases(self, graph, quant_inputs: dict) -> None:
        # An INT32 bias is quantized with input scale x weight scale (what ONNX Runtime's integer conv needs).
        for n in graph.node:
            if n.op_type not in ("Conv", "ConvTranspose") or len(n.input) < 3 or self._keys.get(n.input[2]) not in self.params:
                continue
            bias = self.params[self._keys[n.input[2]]]
            w_key, q = self._keys.get(n.input[1]), quant_inputs.get(n.input[0])
            if bias.dtype == np.int32 and w_key in self.params and q is not None:
                act, weight = self.acts[self._act_of[q.name]], self.params[w_key]
                bias.derived_scale = lambda act=act, weight=weight: act.scale() * weight.scale()

    def _integer_convs(self, graph, consumers: dict, quant_inputs: dict) -> dict[str, tuple]:
        # DQ -> Conv -> Q with an INT8 weight and an INT32 bias (or none) is one QLinearConv in ONNX Runtime (and
        # an integer convolution in every INT8 runtime): integer products summed exactly, then one float32
        # requantization. The float convolution of dequantized values (what the ONNX definition spells out) sums
        # in another order, and the two differ by one step on a value near a rounding boundary (about 1 in 10^6
        # conv outputs) -- which a graph without an image skip (IMDN-RTC) amplifies to ~40 dB at its output.
        # Such convs are computed as the integer kernel computes them (the float path still gives the gradient).
        integer_conv: dict[str, tuple] = {}  # Q node name -> (conv node, input quantizer, weight, bias)
        graph_outputs = set(self.output_names)
        for n in graph.node:
            if n.op_type != "Conv" or n.output[0] in graph_outputs:
                continue
            users = consumers.get(n.output[0], [])
            q_in = quant_inputs.get(n.input[0])
            w_key = self._keys.get(n.input[1])
            b_key = self._keys.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if len(users) != 1 or users[0].op_type != "QuantizeLinear" or q_in is None or w_key not in self.params:
                continue
            act_in, weight = self.acts[self._act_of[q_in.name]], self.params[w_key]
            act_out = self.acts[self._act_of[users[0].name]]
            bias = self.params[b_key] if b_key in self.params else None
            if weight.dtype not in (np.int8, np.uint8) or np.any(weight.zero_point.numpy()) or \
                    act_in.scale0.ndim or act_out.scale0.ndim or \
                    (b_key is not None and (bias is None or bias.dtype != np.int32 or bias.derived_scale is None)):
                continue  # not the QLinearConv form (per-axis activations, float bias, asymmetric weights)
            integer_conv[users[0].name] = (n, act_in, weight, bias)
        return integer_conv


    # ------------------------------------------------------------------------------------------ forward
    def _tensor(self, env: dict, name: str) -> torch.Tensor | None:
        if not name:
            return None
        if name in env:
            return env[name]
        k = self._keys.get(name)
        if k is not None and k in self.floats:
            return self.floats[k]
        if name in self._consts:
            t = torch.from_numpy(np.asarray(self._consts[name]).copy())
            env[name] = t
            return t
        raise QdqGraphError(f"tensor {name!r} is used before it is computed (the graph is not in topological order)")

    def forward(self, lr: torch.Tensor):
        env = self.tensors(lr)
        outs = tuple(env[o] for o in self.output_names)
        return outs[0] if len(outs) == 1 else outs

    def tensors(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tensor of a forward pass, by its name in the graph (a quantizer's output: its dequantized value)."""
        env: dict[str, torch.Tensor] = {self.input_name: lr}
        for kind, n, _ in self._plan:
            if kind == "param":
                env[n.output[0]] = self.params[self._keys[n.output[0]]]()
            elif kind == "act":
                out = self.acts[self._act_of[n.name]](env[n.input[0]])
                if n.name in self._integer_conv and not self.training:  # the integer kernel's value, the
                    # float path's gradient (training steps take the float path's value: see the class)
                    out = out + (self._integer_conv_value(env, n) - out).detach()
                env[n.output[0]] = out
            elif kind == "dq":
                env[n.output[0]] = env[n.input[0]]  # the pair's fake quantizer already dequantized
            else:
                out = self._op(n, [self._tensor(env, i) for i in n.input])
                for name, t in zip(n.output, out if isinstance(out, tuple) else (out,)):
                    env[name] = t
        return env

    def integer_conv_names(self) -> set[str]:
        """The Conv nodes simulated as integer kernels (DQ -> Conv -> Q); every other Conv runs in float."""
        return {conv.name for conv, *_ in self._integer_conv.values()}

    def quantized(self, q_name: str, value: torch.Tensor) -> np.ndarray:
        """The integers the QuantizeLinear node ``q_name`` holds for the simulation's (dequantized) ``value``, in
        the node's output type: what ONNX Runtime gets from it."""
        a = self.acts[self._act_of[q_name]]
        with torch.no_grad():
            s = _channel_view(a.scale(), a.axis, value.ndim)
            z = _channel_view(a.zp(), a.axis, value.ndim)
            q = torch.clamp(torch.round(value / s) + z, a.qmin, a.qmax)
        return q.numpy().astype(np.uint8 if a.qmin >= 0 else np.int8)

    def _integer_conv_value(self, env: dict, q_node) -> torch.Tensor:
        """What ONNX Runtime's QLinearConv returns for DQ -> Conv -> Q (dequantized): the integer convolution
        of ``x_q - x_z`` and ``w_q`` plus the INT32 bias, summed exactly, converted to float32 and multiplied
        by ``x_scale * w_scale / y_scale`` (float32, in that order, as the kernel computes its multiplier),
        rounded half to even and saturated."""
        conv, act_in, weight, bias = self._integer_conv[q_node.name]
        act_out = self.acts[self._act_of[q_node.name]]
        with torch.no_grad():
            xs, ws, ys = act_in.scale(), weight.scale(), act_out.scale()
            x = env[conv.input[0]]
            xi = torch.round(x / xs)  # the pair's fake quantizer gave (q - z) * s exactly
            wi = weight.centered_integers()
            bi = bias.centered_integers() if bias is not None else None
            # Integer products summed in float32 are exact while no partial sum reaches 2^24 (whatever the
            # order); beyond that bound, float64. The bias (up to 2^31) is added in float64.
            bound = float((xi.abs().amax() * wi.abs().flatten(1).sum(1).amax()))
            exact = torch.float32 if bound < 2 ** 24 else torch.float64
            acc = self._op(conv, [xi.to(exact), wi.to(exact), None]).double()
            if bi is not None:
                acc = acc + bi.view(1, -1, *([1] * (acc.ndim - 2)))
            acc = acc.float()
            m = _channel_view((xs * ws) / ys, 1, acc.ndim)
            z = act_out.zp()
            y = torch.round(torch.clamp(acc * m, act_out.qmin - z, act_out.qmax - z))
            return y * ys

    def _op(self, n, x: list) -> torch.Tensor:
        op, a = n.op_type, _attrs(n)
        if op in _OPS:
            return _OPS[op](n, a, x)
        if op == "Relu":
            return F.relu(x[0])
        if op == "PRelu":
            return torch.where(x[0] >= 0, x[0], x[0] * x[1])
        if op == "LeakyRelu":
            return F.leaky_relu(x[0], a.get("alpha", 0.01))
        if op == "Sigmoid":
            return torch.sigmoid(x[0])
        if op == "Tanh":
            return torch.tanh(x[0])
        if op in ("Add", "Sub", "Mul", "Div"):
            return {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}[op](x[0], x[1])
        if op == "Concat":
            return torch.cat(x, dim=a["axis"])
        if op == "Resize":
            return _resize(x[0], n, a, x)
        if op == "Identity":
            return x[0]
        raise QdqGraphError(f"{op} ({n.name}) is not supported by the Q/DQ trainer")

    # ------------------------------------------------------------------------------------------ write back
    def to_onnx(self) -> onnx.ModelProto:
        """A copy of the graph with the trained weights, biases and scales written in (same nodes)."""
        proto = copy.deepcopy(self.proto)
        graph = proto.graph
        values: dict[str, np.ndarray] = {}
        for n in graph.node:
            if n.op_type == "DequantizeLinear" and self._keys.get(n.output[0]) in self.params:
                q, s = self.params[self._keys[n.output[0]]].quantized()
                values[n.input[0]] = q
                values[n.input[1]] = s.reshape(np.shape(self._consts[n.input[1]]))
        for n in graph.node:
            if n.op_type == "QuantizeLinear" and n.name in self._act_of:
                with torch.no_grad():
                    s = self.acts[self._act_of[n.name]].scale().numpy().astype(np.float32)
                act = self.acts[self._act_of[n.name]]
                pair = [n] + [u for u in graph.node if u.op_type == "DequantizeLinear" and u.input[0] == n.output[0]]
                for u in pair:  # the pair's DequantizeLinear has its own scale input (often the same)
                    values[u.input[1]] = s.reshape(np.shape(self._consts[u.input[1]]))
                    if act.zero_offset.requires_grad and len(u.input) > 2 and u.input[2]:
                        zp = self._consts[u.input[2]]
                        with torch.no_grad():
                            z = act.zp().numpy()
                        values[u.input[2]] = np.round(z).astype(zp.dtype).reshape(np.shape(zp))
        for k, name in ((k, name) for name, k in self._keys.items() if k in self.floats):
            values[name] = self.floats[k].detach().numpy().astype(np.float32)
        for init in graph.initializer:
            if init.name in values:  # same shape as before: a 0-d scale must stay 0-d (ONNX Runtime fuses
                # DQ -> Add -> Q into QLinearAdd only for scalar scales; np.ascontiguousarray would make it 1-d)
                value = np.array(values[init.name], order="C").reshape(tuple(init.dims))
                init.CopyFrom(numpy_helper.from_array(value, init.name))
        for n in graph.node:
            if n.op_type == "Constant" and n.output[0] in values:
                for attr in n.attribute:
                    if attr.name == "value":
                        attr.t.CopyFrom(numpy_helper.from_array(values[n.output[0]], n.output[0]))
        return proto


@dataclass(frozen=True)
class Divergence:
    """Where the simulation and ONNX Runtime part (:func:`where_onnx_runtime_differs`)."""

    float_order_only: bool
    """True when, given the same quantized inputs, every quantizer and output agrees but for isolated one-step
    flips after float convolutions (float summation order: the simulation computes what runs)."""
    message: str
    flips: tuple[str, ...] = ()
    """``"quantizer off/size"`` for each quantizer with flips."""


def where_onnx_runtime_differs(graph: QdqGraph, path, x: torch.Tensor, threads: int = 0) -> Divergence:
    """Where the simulation and ONNX Runtime part: every QuantizeLinear of the written graph, and every output, has
    its piece of graph (from the quantized tensors it depends on) run by ONNX Runtime, fully optimised, on the
    simulation's own values, and compared with the simulation's. A float convolution (Conv + activation with no
    pair between: ONNX Runtime's FusedConv; a consumer of an activation kept in float) sums in MLAS's order, which
    no simulation reproduces; isolated one-step flips after one are float arithmetic, amplified by a graph without
    an image skip."""
    import tempfile
    from pathlib import Path

    from onnx.utils import extract_model

    from .runtime.onnxruntime_backend import ort_session

    graph.eval()  # what ONNX Runtime computes (see QdqGraph)
    proto = onnx.load(str(path))
    producer = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name for i in proto.graph.initializer}
    float_convs = {n.name for n in proto.graph.node if n.op_type == "Conv"} - graph.integer_conv_names()
    with torch.no_grad():
        env, outs = graph.tensors(x), graph(x)
    outs = outs if isinstance(outs, tuple) else (outs,)
    targets = [(n.output[0], n) for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    targets += [(o, None) for o in graph.output_names]
    flips = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, q in targets:
            inputs, nodes = _piece_inputs(name if q is None else q.input[0], producer, inits)
            piece = Path(tmp) / "piece.onnx"
            extract_model(str(path), str(piece), sorted(inputs), [name])
            feeds = {t: graph.quantized(producer[t].name, env[t]) if t in producer else env[t].numpy() for t in inputs}
            got = ort_session(str(piece), threads=threads).run(None, feeds)[0]
            ops = ", ".join(sorted({n.op_type for n in nodes} - {"DequantizeLinear"})) or "none"
            if q is None:
                d = float(np.abs(got - outs[graph.output_names.index(name)].numpy()).max())
                if d > 1e-4:
                    return Divergence(False, f"given the same quantized inputs, output {name} differs by up to {d:.3g} "
                                             f"(ops between: {ops}); report the graph so that the simulation can be fixed")
                continue
            n_off = int((graph.quantized(q.name, env[name]) != got).sum())
            sandwiched = [n.name for n in nodes if n.name in float_convs and n.output[0] == q.input[0]
                          and n.input[1] in inits and producer.get(n.input[0]) is not None
                          and producer[n.input[0]].op_type == "DequantizeLinear"]
            if n_off > 1e-4 * got.size and sandwiched:
                return Divergence(False, f"given the same quantized inputs, quantizer {q.name} has {n_off} of {got.size} "
                                         f"values a step off: ONNX Runtime quantizes the float convolution "
                                         f"{sandwiched[0]} itself (its WeightBiasQuantization optimizer, per-tensor "
                                         "INT8 weights) because it sits between a DequantizeLinear and a "
                                         "QuantizeLinear, while the simulation computes it in float; keep that "
                                         "layer's output in float as well, or quantize the layer")
            if n_off and (not any(n.name in float_convs for n in nodes) or n_off > 1e-4 * got.size):
                return Divergence(False, f"given the same quantized inputs, quantizer {q.name} has {n_off} of "
                                         f"{got.size} values a step off (ops between: {ops}); report the graph so that "
                                         "the simulation can be fixed")
            if n_off:
                flips.append(f"{q.name} {n_off}/{got.size}")
    return Divergence(True, "given the same quantized inputs every quantizer and output agrees, but for isolated "
                            f"one-step flips after float convolutions ({'; '.join(flips) or 'none'}): float summation "
                            "order, amplified by the graph", tuple(flips))


def _piece_inputs(start: str, producer: dict, inits: set) -> tuple[set, list]:
    """The quantized tensors (or graph inputs) ``start`` depends on, and the nodes between."""
    inputs, nodes, stack, seen = set(), [], [start], set()
    while stack:
        t = stack.pop()
        if not t or t in seen or t in inits:
            continue
        seen.add(t)
        p = producer.get(t)
        if p is None or p.op_type == "QuantizeLinear":
            inputs.add(t)
            continue
        nodes.append(p)
        stack.extend(p.input)
    return inputs, nodes


# --- the operators with more than a line to them (node, attributes, computed inputs) ---------------------------

def _conv(n, a: dict, x: list):
    kernel = tuple(x[1].shape[2:])
    inp, padding = _conv_padding(x[0], a, kernel)
    conv = F.conv2d if len(kernel) == 2 else F.conv1d
    return conv(inp, x[1], x[2] if len(x) > 2 else None, stride=tuple(a.get("strides", [1] * len(kernel))),
                padding=padding, dilation=tuple(a.get("dilations", [1] * len(kernel))), groups=a.get("group", 1))


def _conv_transpose(n, a: dict, x: list):
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or "output_shape" in a:
        raise QdqGraphError(f"ConvTranspose {n.name}: auto_pad/output_shape are not supported by the Q/DQ trainer")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise QdqGraphError(f"ConvTranspose {n.name}: asymmetric pads are not supported by the Q/DQ trainer")
    return F.conv_transpose2d(x[0], x[1], x[2] if len(x) > 2 else None, stride=tuple(a.get("strides", [1, 1])),
                              padding=tuple(pads[:2]), output_padding=tuple(a.get("output_padding", [0, 0])),
                              groups=a.get("group", 1), dilation=tuple(a.get("dilations", [1, 1])))


def _clip(n, a: dict, x: list):
    lo = x[1] if len(x) > 1 and x[1] is not None else None
    hi = x[2] if len(x) > 2 and x[2] is not None else None
    return torch.clamp(x[0], lo, hi)


def _depth_to_space(n, a: dict, x: list):
    if a.get("mode", b"DCR").decode() == "CRD":
        return F.pixel_shuffle(x[0], a["blocksize"])
    b = a["blocksize"]
    nb, c, h, w = x[0].shape
    return x[0].reshape(nb, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2).reshape(nb, c // (b * b), h * b, w * b)


def _shape(n, a: dict, x: list):
    dims = list(x[0].shape)
    return torch.tensor(dims[slice(a.get("start", 0), a.get("end"))], dtype=torch.int64)


def _max_pool(n, a: dict, x: list):
    kernel = tuple(a["kernel_shape"])
    if len(kernel) != 2 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or \
            a.get("storage_order", 0) or len(n.output) > 1:
        raise QdqGraphError(f"MaxPool {n.name}: only 2-D pooling without auto_pad or indices is supported "
                            "by the Q/DQ trainer")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    inp = x[0]
    if pads[:2] != pads[2:]:  # asymmetric: pad with -inf (ONNX pads are never selected)
        inp = F.pad(inp, [pads[1], pads[3], pads[0], pads[2]], value=float("-inf"))
        pads = [0, 0, 0, 0]
    return F.max_pool2d(inp, kernel, stride=tuple(a.get("strides", [1, 1])), padding=tuple(pads[:2]),
                        dilation=tuple(a.get("dilations", [1, 1])), ceil_mode=bool(a.get("ceil_mode", 0)))


def _reduce_sum(n, a: dict, x: list):
    axes = [int(v) for v in (x[1].tolist() if len(x) > 1 and x[1] is not None else a.get("axes", []))]
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return x[0]
        axes = list(range(x[0].ndim))
    return torch.sum(x[0], dim=axes, keepdim=bool(a.get("keepdims", 1)))


def _split(n, a: dict, x: list):
    axis = a.get("axis", 0)
    sizes = x[1].tolist() if len(x) > 1 and x[1] is not None else a.get("split")
    if not sizes:
        parts = a.get("num_outputs", len(n.output))
        size = -(-x[0].shape[axis] // parts)
        sizes = [min(size, x[0].shape[axis] - i * size) for i in range(parts)]
    return tuple(torch.split(x[0], [int(v) for v in sizes], dim=axis))


def _slice(n, a: dict, x: list):
    starts, ends = x[1].tolist(), x[2].tolist()
    axes = x[3].tolist() if len(x) > 3 and x[3] is not None else list(range(len(starts)))
    steps = x[4].tolist() if len(x) > 4 and x[4] is not None else [1] * len(starts)
    index = [slice(None)] * x[0].ndim
    for ax, st, en, sp in zip(axes, starts, ends, steps):
        dim = x[0].shape[ax]
        if sp < 0:  # a reversed range: the positions ONNX selects, gathered
            st = min(st + dim if st < 0 else st, dim - 1)
            en = max(en + dim if en < 0 else en, -1)
            idx = torch.arange(st, en, sp)
            return torch.index_select(x[0], ax, idx) if len(axes) == 1 else _unsupported(n)
        index[ax] = slice(max(min(st, dim), -dim), max(min(en, dim), -dim - 1) if en < 0 else min(en, dim), sp)
    return x[0][tuple(index)]


def _gather(n, a: dict, x: list):
    axis = a.get("axis", 0)
    idx = x[1].long()
    if idx.ndim == 0:
        return torch.select(x[0], axis, int(idx))
    if idx.ndim == 1:
        return torch.index_select(x[0], axis, torch.where(idx < 0, idx + x[0].shape[axis], idx))
    return _unsupported(n)


_PAD_MODES = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}


def _pad(n, a: dict, x: list):
    """ONNX Pad (opset >= 11: pads as an input; [begin_0, begin_1, ..., end_0, end_1, ...]), non-negative
    pads on the last two axes in any mode, or on any axis in constant mode."""
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = [int(v) for v in x[1].tolist()]
    axes = x[3].tolist() if len(x) > 3 and x[3] is not None else list(range(x[0].ndim))
    axes = [int(ax) % x[0].ndim for ax in axes]
    k = len(axes)
    begin, end = dict(zip(axes, pads[:k])), dict(zip(axes, pads[k:]))
    if mode not in _PAD_MODES or min(pads, default=0) < 0 or \
            (mode != "constant" and any(begin[ax] or end[ax] for ax in axes if ax < x[0].ndim - 2)):
        return _unsupported(n)
    order = sorted(axes, reverse=True) if mode == "constant" else [x[0].ndim - 1, x[0].ndim - 2]
    torch_pads = [p for ax in order for p in (begin.get(ax, 0), end.get(ax, 0))]
    value = float(x[2]) if mode == "constant" and len(x) > 2 and x[2] is not None and x[2].numel() else 0.0
    if mode == "constant":
        return F.pad(x[0], torch_pads, value=value)
    return F.pad(x[0], torch_pads, mode=_PAD_MODES[mode])


def _reshape(n, a: dict, x: list):
    shape = [int(v) for v in x[1].tolist()]
    if not a.get("allowzero", 0):
        shape = [x[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x[0].reshape(shape)


def _axes(n, a: dict, x: list) -> list[int] | None:
    if len(x) > 1 and x[1] is not None:
        return [int(v) for v in x[1].tolist()]
    return a.get("axes")


def _squeeze(n, a: dict, x: list):
    axes = _axes(n, a, x)
    if axes is None:
        return x[0].squeeze()
    y = x[0]
    for ax in sorted((ax % y.ndim for ax in axes), reverse=True):
        y = y.squeeze(ax)
    return y


def _unsqueeze(n, a: dict, x: list):
    y = x[0]
    out_rank = y.ndim + len(_axes(n, a, x))
    for ax in sorted(ax % out_rank for ax in _axes(n, a, x)):
        y = y.unsqueeze(ax)
    return y


_OPS = {
    "Pad": _pad,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Clip": _clip,
    "DepthToSpace": _depth_to_space,
    "Shape": _shape,
    "MaxPool": _max_pool,
    "ReduceSum": _reduce_sum,
    "Split": _split,
    "Slice": _slice,
    "Gather": _gather,
}
