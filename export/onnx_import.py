"""Foreign ONNX import: an image-to-image ONNX graph exported by someone else's code becomes an ONNX artifact in
edgesr's I/O convention (``edgesr import MODEL.onnx`` and the ``import_onnx`` stage).

The authors' graph is kept node for node; conversions are added around it as graph nodes: their input range
(``0-255``: a Mul by 255 in, a Div by 255 out) and channel order (``bgr``: a Gather of channels 2, 1, 0 on
both sides; ``y``: a luminance-only network, as SRCNN, FSRCNN and VDSR are published: Y is computed from RGB
as the protocol measures it (BT.601, a 1x1 Conv), the network upscales it, and the colour comes from the
bicubic-upscaled input shifted so that its Y is the network's), and the I/O names (``lr`` in; ``sr``, or ``sr_x2`` ``sr_x3`` ... for a graph with several
outputs, ordered by scale). A static height and width are made dynamic (and a fixed batch of 1 too) when the
graph runs at other sizes, which a fully convolutional graph does; one that does not is refused with the
reason. Each output's scale is found by running the graph, the wrapped graph is checked against the authors'
file on a real photograph (parity), and a probe on a real photograph checks the conventions: a range or
channel order that makes the network worse than its alternative (and than bicubic) is refused, naming the
flag that fits.

Refused with the fix: not an ONNX file, no or several image inputs, an input that is not N x 3 x H x W float
(NHWC layout, one channel), an output that is not an image, a non-integer scale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesr.artifacts import Artifact, Candidate, materialize
from edgesr.data.bicubic import imresize
from edgesr.data.datasets import builtin_images, parity_image
from edgesr.errors import EdgesrError
from edgesr.imaging import to_float, to_uint8
from edgesr.metrics import psnr_y
from edgesr.onnxutil import keep_outputs, op_counts, output_names
from edgesr.runtime.onnxruntime_backend import ort_session
from edgesr.stages import ONNX_FP32, StageContext, register_stage

__all__ = ["OnnxImportError", "ImportOnnxConfig", "import_onnx", "wrap_graph"]

RANGES = ("0-1", "0-255")
CHANNELS = ("rgb", "bgr", "y")
Y_WEIGHTS = (65.481 / 255, 128.553 / 255, 24.966 / 255)  # BT.601 as the protocol measures Y (edgesr.models.luma)


class OnnxImportError(EdgesrError, ValueError):
    """A foreign ONNX file that cannot become an edgesr artifact; the message names the file and the fix."""


def _dims(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def _read(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise OnnxImportError(f"{path}: no such ONNX file. Check the path (relative paths start at {Path.cwd()}).")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise OnnxImportError(f"{path}: cannot read it as an ONNX model ({type(exc).__name__}); the file is corrupt, "
                              "truncated or not ONNX. Export it again.") from None
    if not proto.graph.node:
        raise OnnxImportError(f"{path}: holds no graph nodes; it is not an ONNX model of a network.")
    return proto


def _image_io(proto: onnx.ModelProto, path: Path, output: str | None,
              channels: str = "rgb") -> tuple[onnx.ValueInfoProto, list]:
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise OnnxImportError(f"{path}: has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); edgesr imports "
                              "image-to-image graphs with one image input. Export the network with one input.")
    inp = inputs[0]
    dims = _dims(inp)
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise OnnxImportError(f"{path}: input {inp.name!r} is {TensorProto.DataType.Name(inp.type.tensor_type.elem_type)}"
                              "; edgesr imports float32 graphs (quantize after import). Export it in float32.")
    if len(dims) != 4:
        raise OnnxImportError(f"{path}: input {inp.name!r} has shape {dims}; an image input is N x C x H x W.")
    want = 1 if channels == "y" else 3
    if dims[1] != want:
        if dims[3] in (1, 3) and dims[1] not in (1, 3):
            raise OnnxImportError(f"{path}: input {inp.name!r} is N x H x W x {dims[3]} ({dims}), channels last; edgesr "
                                  "graphs are N x C x H x W. Export with channels first (PyTorch's default).")
        if dims[1] == 1:
            raise OnnxImportError(f"{path}: input {inp.name!r} has one channel ({dims}): a luminance (Y) network. "
                                  "Import it with --channels y.")
        if channels == "y" and dims[1] == 3:
            raise OnnxImportError(f"{path}: input {inp.name!r} has 3 channels ({dims}); --channels y is for "
                                  "networks with one (Y) input. Give --channels rgb or bgr.")
        raise OnnxImportError(f"{path}: input {inp.name!r} has {dims[1]} channels ({dims}); edgesr imports RGB/BGR "
                              "graphs (3 channels) and luminance graphs (1, --channels y).")
    outs = list(proto.graph.output)
    if output is not None:
        names = [o.name for o in outs]
        if output not in names:
            raise OnnxImportError(f"{path}: has no output {output!r}; its outputs: {', '.join(names)}.")
        outs = [o for o in outs if o.name == output]
    for o in outs:
        od = _dims(o)
        if len(od) != 4 or od[1] not in (want, None):
            raise OnnxImportError(f"{path}: output {o.name!r} has shape {od}, not an N x {want} x H x W image; edgesr "
                                  "imports image-to-image graphs (pick the image output with --output).")
    return inp, outs


def _make_dynamic(proto: onnx.ModelProto, inp, outs, spatial: bool = True) -> None:
    """Make the batch (and, with ``spatial``, height and width) of the input and outputs symbolic."""
    for d, name in zip(inp.type.tensor_type.shape.dim, ("batch", None, "height", "width")):
        if name and (spatial or name == "batch"):
            d.ClearField("dim_value")
            d.dim_param = name
    for i, o in enumerate(outs):
        for d, name in zip(o.type.tensor_type.shape.dim,
                           ("batch", None, f"out{i}_h", f"out{i}_w") if spatial else ("batch", None, None, None)):
            if name:
                d.ClearField("dim_value")
                d.dim_param = name
    del proto.graph.value_info[:]  # shapes recorded for the static size would contradict other sizes


def wrap_graph(proto: onnx.ModelProto, inp_name: str, outs: list[str], scales: list[int], *, value_range: str,
               channels: str, input_dims: tuple = ("batch", "height", "width")) -> onnx.ModelProto:
    """A copy of ``proto`` taking ``lr`` (RGB [0, 1]) and returning ``sr``/``sr_xS`` in the same convention.
    ``input_dims``: N, H, W of ``lr`` (symbolic, or the sizes a fixed-size graph is bound to)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    taken = {n for node in g.node for n in (*node.input, *node.output)} | {i.name for i in g.initializer}
    if "lr" in taken and inp_name != "lr" or any(n in taken for n in output_names(scales)):
        raise OnnxImportError("the graph already uses edgesr's tensor names (lr, sr...) inside; rename them first")
    pre, post, consts = [], [], []
    if channels == "y":
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < 11:
            raise OnnxImportError(f"the graph is opset {opset}; a luminance graph's colour is upscaled with a cubic "
                                  "Resize (opset 11 or later). Export it with opset_version=11 or later.")
        consts += [numpy_helper.from_array(np.array(Y_WEIGHTS, np.float32).reshape(1, 3, 1, 1), "edgesr_y_weights"),
                   numpy_helper.from_array(np.array([16 / 255], np.float32), "edgesr_y_offset"),
                   numpy_helper.from_array(np.array(1 / sum(Y_WEIGHTS), np.float32), "edgesr_y_gain")]
    if channels == "bgr":
        consts.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "edgesr_bgr_order"))
    if value_range == "0-255":
        consts.append(numpy_helper.from_array(np.array(255.0, np.float32), "edgesr_255"))
    cur = "lr"
    if inp_name == "lr":  # the authors' own name: their nodes read a renamed tensor
        for node in g.node:
            node.input[:] = ["edgesr_authors_in" if i == "lr" else i for i in node.input]
        inp_name = "edgesr_authors_in"
    steps = [("Gather", "edgesr_bgr_order", {"axis": 1})] if channels == "bgr" else []
    steps += [("Conv", "edgesr_y_weights", {})] if channels == "y" else []
    steps += [("Mul", "edgesr_255", {})] if value_range == "0-255" else []
    for k, (op, const, attrs) in enumerate(steps):
        dst = inp_name if k == len(steps) - 1 else f"edgesr_pre{k}"
        extra = ["edgesr_y_offset"] if op == "Conv" else []  # Y = weights . RGB + 16/255 (one 1x1 Conv)
        pre.append(helper.make_node(op, [cur, const, *extra], [dst], name=f"edgesr_pre_{op.lower()}", **attrs))
        cur = dst
    if not steps:
        pre.append(helper.make_node("Identity", ["lr"], [inp_name], name="edgesr_pre_identity"))
    new_outputs = []
    for o, name, scale in zip(outs, output_names(scales), scales):
        cur = o
        steps = [("Div", "edgesr_255", {})] if value_range == "0-255" else []
        steps += [("Gather", "edgesr_bgr_order", {"axis": 1})] if channels == "bgr" else []
        steps = steps or [("Identity", None, {})]
        for k, (op, const, attrs) in enumerate(steps):
            dst = name if k == len(steps) - 1 and channels != "y" else f"edgesr_post_{name}_{k}"
            post.append(helper.make_node(op, [cur] + ([const] if const else []), [dst],
                                         name=f"edgesr_post_{name}_{op.lower()}", **attrs))
            cur = dst
        if channels == "y":  # RGB whose Y is the network's: the bicubic-upscaled input, shifted by the Y difference
            t = f"edgesr_{name}_"
            consts.append(numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), t + "scales"))
            post += [helper.make_node("Resize", ["lr", "", t + "scales"], [t + "up"], name=t + "chroma", mode="cubic",
                                      cubic_coeff_a=-0.75, coordinate_transformation_mode="half_pixel"),
                     helper.make_node("Conv", [t + "up", "edgesr_y_weights", "edgesr_y_offset"], [t + "up_y"],
                                      name=t + "up_luma"),
                     helper.make_node("Sub", [cur, t + "up_y"], [t + "dy"], name=t + "dy"),
                     helper.make_node("Mul", [t + "dy", "edgesr_y_gain"], [t + "shift"], name=t + "shift"),
                     helper.make_node("Add", [t + "up", t + "shift"], [name], name=t + "rgb")]
        new_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [input_dims[0], 3, None, None]))
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(consts)
    kept = [i for i in g.input if i.name not in (inp_name, "lr")]  # initializers listed as inputs (old opsets)
    del g.input[:]
    n, h, w = input_dims
    g.input.extend([helper.make_tensor_value_info("lr", TensorProto.FLOAT, [n, 3, h, w]), *kept])
    del g.output[:]
    g.output.extend(new_outputs)
    return model


def _luma(rgb: np.ndarray) -> np.ndarray:
    """N x 3 x H x W RGB in [0, 1] -> N x 1 x H x W Y in [16/255, 235/255] (float32, as the wrapped graph)."""
    w = np.array(Y_WEIGHTS, np.float32).reshape(1, 3, 1, 1)
    return ((rgb * w).sum(axis=1, keepdims=True) + np.float32(16 / 255)).astype(np.float32)


def _run(path_or_bytes, x: np.ndarray, name: str) -> list[np.ndarray]:
    sess = ort_session(path_or_bytes, threads=0)
    return sess.run(None, {name: x})


def _session_bytes(proto: onnx.ModelProto) -> bytes:
    return proto.SerializeToString()


def _probe_photo() -> np.ndarray:
    """A real photograph (a held-out built-in image), cropped to 96 x 120 HR."""
    _, img = builtin_images("valid")[0]
    return img[60:156, 100:220]


def _quality(wrapped: bytes, scale_index: int, scale: int, input_size=None) -> tuple[float, float]:
    """(PSNR-Y of the wrapped graph, of bicubic) on the probe photograph at ``scale`` (resized so that its LR
    has the graph's fixed ``input_size``, if it has one)."""
    hr = _probe_photo()
    if input_size:
        hr = to_uint8(np.clip(imresize(to_float(builtin_images("valid")[0][1]),
                                       output_shape=(input_size[0] * scale, input_size[1] * scale)), 0, 1))
    hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
    lr = to_uint8(np.clip(imresize(to_float(hr), 1 / scale), 0, 1))
    x = to_float(lr).transpose(2, 0, 1)[None].astype(np.float32)
    sr = _run(wrapped, x, "lr")[scale_index][0].transpose(1, 2, 0)
    bic = np.clip(imresize(to_float(lr), scale), 0, 1)
    return psnr_y(to_uint8(np.clip(sr, 0, 1)), hr, scale), psnr_y(to_uint8(bic), hr, scale)


def import_onnx(path: str | Path, out: str | Path, *, value_range: str = "0-1", channels: str = "rgb",
                output: str | None = None, name: str | None = None, overwrite: bool = False) -> Artifact:
    """Wrap a foreign ONNX file into an edgesr ONNX artifact at ``out`` (see the module docstring)."""
    return materialize(out, lambda staging: onnx_candidate(path, staging, value_range=value_range, channels=channels,
                                                           output=output, name=name or Path(out).name),
                       overwrite=overwrite)


def onnx_candidate(path: str | Path, staging: Path, *, value_range: str, channels: str, output: str | None,
                   name: str) -> Candidate:
    """The wrapped graph of ``path`` as a candidate artifact written in ``staging`` (see :func:`import_onnx`)."""
    path = Path(path)
    if value_range not in RANGES:
        raise OnnxImportError(f"--range {value_range}: give one of {', '.join(RANGES)}")
    if channels not in CHANNELS:
        raise OnnxImportError(f"--channels {channels}: give one of {', '.join(CHANNELS)}")
    proto = _read(path)
    inp, outs = _image_io(proto, path, output, channels)
    nc = 1 if channels == "y" else 3
    static = [d for d in _dims(inp)[2:] if isinstance(d, int)]
    fixed_hw = tuple(_dims(inp)[2:]) if len(static) == 2 else None
    if output is not None:
        keep_outputs(proto.graph, {output})
        del proto.graph.output[:]
        proto.graph.output.extend(outs)
    inp_name, out_names = inp.name, [o.name for o in outs]
    dyn, ys, probe_hw, batch, input_size, max_batch = _runnable(proto, inp, path, nc, fixed_hw)
    scales, out_names = _probe_scales(path, out_names, ys, batch, nc, probe_hw)
    dims = ("batch" if max_batch is None else 1, *(input_size or ("height", "width")))
    wrapped = wrap_graph(dyn, inp_name, out_names, scales, value_range=value_range, channels=channels,
                         input_dims=dims)
    diffs, (ph, pw) = _wrapped_parity(path, proto, wrapped, inp_name, out_names, value_range, channels, fixed_hw)
    mine, bicubic, alternatives = _check_conventions(path, dyn, wrapped, inp_name, out_names, scales, value_range,
                                                     channels, dims, input_size)
    del wrapped.metadata_props[:]
    for k, v in {"edgesr.scales": json.dumps(scales), "edgesr.io": "lr: Nx3xHxW float32 RGB [0,1] -> sr",
                 "edgesr.source": path.name}.items():
        e = wrapped.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(wrapped)
    from edgesr.importing import file_sha256  # the checkpoint importer's file identity (core)

    source = {"file": str(path), "file_name": path.name, "sha256": file_sha256(path), "range": value_range,
              "channels": channels, "input": inp_name, "outputs": out_names,
              "input_shape": _dims(inp), "made_dynamic": (fixed_hw is not None and input_size is None)
              or (_dims(inp)[0] == 1 and max_batch is None)}
    params = int(sum(np.prod(i.dims) for i in wrapped.graph.initializer if not i.name.startswith("edgesr_")))
    manifest = {"kind": "onnx", "name": name, "arch": {"type": "onnx", "source": path.name},
                "scales": scales, "precision": "fp32", "params": params, "size_multiple": 1,
                **({"input_size": input_size} if input_size else {}), **({"max_batch": 1} if max_batch else {}),
                "transforms": [{"type": "import_onnx", "source": path.name, "sha256": source["sha256"],
                                "range": value_range, "channels": channels}],
                "source": source, "ops": op_counts(wrapped),
                "metrics": {"parity": {"max_abs": max(diffs), "input_hw": [ph, pw]},
                            "probe": {"psnr_y": round(mine, 3), "bicubic_psnr_y": round(bicubic, 3),
                                      "alternatives": {f"{r} {c}": round(v, 3) for (r, c), v in alternatives.items()}}}}
    onnx.save_model(wrapped, str(staging / "model.onnx"))
    return Candidate(staging, "model.onnx", manifest)




def _runnable(proto, inp, path: Path, nc: int, fixed_hw):
    """The authors' graph made dynamic (N, H, W) where it runs so, else kept at its own size (a Reshape to
    constant shapes, say: the runtime then tiles to it) and, if need be, at batch 1; with its outputs on a probe
    input: (graph, outputs, probe size, batch, input_size, max_batch)."""
    inp_name = inp.name
    dyn = onnx.ModelProto()
    dyn.CopyFrom(proto)
    _make_dynamic(dyn, next(i for i in dyn.graph.input if i.name == inp_name), list(dyn.graph.output))
    probe_hw, batch = (29, 37), 2
    rng = np.random.default_rng(0)
    input_size = max_batch = None
    try:
        ys = _run(_session_bytes(dyn), rng.random((2, nc, *probe_hw), dtype=np.float32), inp_name)
    except Exception as exc:  # ORT raises its own types for shape errors
        first = str(exc).strip().splitlines()[0][:300]
        if fixed_hw is None:
            raise OnnxImportError(f"{path}: the graph fails on a 2 x {nc} x {probe_hw[0]} x {probe_hw[1]} input "
                                  f"({first}), though its input is declared {_dims(inp)}. Export it again with sizes it "
                                  "runs at, or with a fixed input size (edgesr then tiles images to it).") from None
        input_size, probe_hw = list(fixed_hw), fixed_hw
        dyn.CopyFrom(proto)  # its own size; the batch made dynamic if the graph runs several images at once
        _make_dynamic(dyn, next(i for i in dyn.graph.input if i.name == inp_name), list(dyn.graph.output),
                      spatial=False)
        try:
            ys = _run(_session_bytes(dyn), rng.random((2, nc, *probe_hw), dtype=np.float32), inp_name)
        except Exception:
            dyn.CopyFrom(proto)
            max_batch, batch = 1, 1
            try:
                ys = _run(_session_bytes(dyn), rng.random((1, nc, *probe_hw), dtype=np.float32), inp_name)
            except Exception as exc2:
                first = str(exc2).strip().splitlines()[0][:300]
                raise OnnxImportError(f"{path}: the graph does not run even at its own size {_dims(inp)} "
                                      f"({first}); check it with onnxruntime first.") from None
    return dyn, ys, probe_hw, batch, input_size, max_batch


def _probe_scales(path: Path, out_names: list[str], ys, batch: int, nc: int, probe_hw) -> tuple[list[int], list[str]]:
    """Each output's integer scale from the probe run; the outputs sorted by it."""
    scales = []
    for o, y in zip(out_names, ys):
        if y.ndim != 4 or y.shape[:2] != (batch, nc):
            raise OnnxImportError(f"{path}: output {o!r} came out {y.shape} for a {batch} x {nc} x H x W input; not "
                                  "an image per input image.")
        sh, sw = y.shape[2] / probe_hw[0], y.shape[3] / probe_hw[1]
        if sh != sw or sh != int(sh) or sh < 1:
            raise OnnxImportError(f"{path}: output {o!r} is {y.shape[2]}x{y.shape[3]} for a {probe_hw[0]}x{probe_hw[1]} "
                                  f"input: scale {sh:g} x {sw:g}, not one integer scale. edgesr imports "
                                  "super-resolution graphs with an integer scale.")
        scales.append(int(sh))
    if len(set(scales)) != len(scales):
        raise OnnxImportError(f"{path}: outputs {out_names} have scales {scales}; two outputs at one scale cannot be "
                              "told apart. Pick one with --output.")
    order = sorted(range(len(scales)), key=lambda i: scales[i])
    scales, out_names = [scales[i] for i in order], [out_names[i] for i in order]
    return scales, out_names


def _wrapped_parity(path: Path, proto, wrapped, inp_name: str, out_names: list[str], value_range: str, channels: str,
                    fixed_hw) -> tuple[list[float], tuple[int, int]]:
    """The wrapped graph against the authors' file as written, on a real photograph at the file's size."""
    original = proto.SerializeToString()
    ph, pw = fixed_hw or (45, 67)
    photo = parity_image() if fixed_hw is None else to_uint8(np.clip(imresize(to_float(builtin_images("valid")[0][1]),
                                                                               output_shape=(ph, pw)), 0, 1))
    x = to_float(photo[:ph, :pw]).transpose(2, 0, 1)[None].astype(np.float32)
    xin = x[:, ::-1] if channels == "bgr" else _luma(x) if channels == "y" else x
    xin = np.ascontiguousarray(xin * 255.0 if value_range == "0-255" else xin, dtype=np.float32)
    ref = _run(original, xin, inp_name)
    ref = [ref[[o.name for o in proto.graph.output].index(n)] for n in out_names]
    got = _run(wrapped.SerializeToString(), x, "lr")
    diffs = []
    for r, y in zip(ref, got):
        r = r / 255.0 if value_range == "0-255" else r
        r = r[:, ::-1] if channels == "bgr" else r
        y = _luma(y) if channels == "y" else y  # the output's Y is the network's
        diffs.append(float(np.abs(r - y).max()))
    if max(diffs) > 1e-4:
        raise OnnxImportError(f"{path}: the wrapped graph differs from the file by up to {max(diffs):.2e} on a real "
                              "photograph; this graph cannot be wrapped faithfully. Report the file.")
    return diffs, (ph, pw)


def _check_conventions(path: Path, dyn, wrapped, inp_name: str, out_names: list[str], scales: list[int],
                       value_range: str, channels: str, dims, input_size):
    """The probe on a real photograph: the declared range and channel order must not score far below another
    one that beats bicubic. Returns (its PSNR-Y, bicubic's, each alternative's)."""
    blob = wrapped.SerializeToString()
    mine, bicubic = _quality(blob, 0, scales[0], input_size)
    alternatives = {}
    for r in RANGES:
        for c in (("y",) if channels == "y" else ("rgb", "bgr")):
            if (r, c) != (value_range, channels):
                alt = wrap_graph(dyn, inp_name, out_names, scales, value_range=r, channels=c,
                                 input_dims=dims).SerializeToString()
                alternatives[(r, c)] = _quality(alt, 0, scales[0], input_size)[0]
    (best_r, best_c), best = max(alternatives.items(), key=lambda kv: kv[1])
    if best > mine + 1.0 and mine < bicubic + 0.5:
        flags = " ".join(f for f in (f"--range {best_r}" if best_r != value_range else "",
                                     f"--channels {best_c}" if best_c != channels else "") if f)
        raise OnnxImportError(f"{path}: with --range {value_range} --channels {channels} the network scores "
                              f"{mine:.2f} dB on a real photograph, below bicubic's {bicubic:.2f} dB, and {best:.2f} dB "
                              f"with {flags}: its input convention is not the one given. Import it with {flags}.")
    return mine, bicubic, alternatives


@dataclass(frozen=True)
class ImportOnnxConfig:
    """Import a foreign ONNX file (``path``) as this run's FP32 ONNX artifact."""

    path: str
    range: Literal["0-1", "0-255"] = "0-1"
    channels: Literal["rgb", "bgr", "y"] = "rgb"
    output: str | None = None
    """Keep only this output of a graph with several."""


@register_stage("import_onnx", ImportOnnxConfig, makes=ONNX_FP32, external="path")
def import_onnx_stage(cfg: ImportOnnxConfig, ctx: StageContext) -> Candidate:
    cand = onnx_candidate(cfg.path, ctx.staging, value_range=cfg.range, channels=cfg.channels, output=cfg.output,
                          name=ctx.name)
    if ctx.scale not in cand.manifest["scales"]:
        raise OnnxImportError(f"{cfg.path}: is a x{'/x'.join(map(str, cand.manifest['scales']))} graph; the recipe's "
                              f"scale is {ctx.scale}. Import a graph of that scale, or change the recipe's scale.")
    return cand
