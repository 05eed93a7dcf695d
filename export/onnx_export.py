"""torch -> ONNX for the two bundle graphs, with fixed shapes and the tensor names of edge_runtime.names.

    tensors = export_graphs(model, out_dir, opset=17)
    # out_dir/global.onnx: image [1,3,S,S] -> global_logits [1,C], heatmap [1,1,h,w], boxes [1,K,4],
    #                      box_scores [1,K], global_features [1,D]
    # out_dir/parts.onnx:  crops [K,3,R,R] -> part_logits [K,C]
    # tensors = {"global": {"inputs": {...}, "outputs": {...}}, "parts": {...}}  (integer shapes)

Uses the TorchScript exporter (dynamo=False): the model's box picking is written for it (K unrolled
steps, no data-dependent Python), and it needs no onnxscript. Every file passes onnx.checker.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from edge_runtime import names
from export import ExportError
from export.wrapper import GlobalGraph, PartsGraph

DEFAULT_OPSET = 17
MIN_OPSET = 13  # per-channel Q/DQ (INT8 files) and TensorRT's explicit quantisation need 13+
MAX_OPSET = 20


def graph_shapes(model: onnx.ModelProto) -> dict:
    """{"inputs": {name: shape}, "outputs": {name: shape}} of an ONNX model; ExportError if a dim is not
    a fixed integer."""
    def shapes(values) -> dict:
        out = {}
        for v in values:
            dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            if any(d is None or d <= 0 for d in dims):
                raise ExportError(f"tensor {v.name} has a non-fixed shape {dims}; bundles need fixed shapes")
            out[v.name] = dims
        return out

    init = {i.name for i in model.graph.initializer}
    return {"inputs": shapes(v for v in model.graph.input if v.name not in init),
            "outputs": shapes(model.graph.output)}


def _fix_output_shapes(path: Path, module: nn.Module, example: torch.Tensor) -> None:
    """Write the traced outputs' concrete shapes into the graph outputs. The exporter leaves a dim
    symbolic where its shape inference stops (e.g. behind the Pad of TF-"same" padding in
    EfficientNet-Lite); the graph is traced at one fixed input shape, so the torch run gives the truth."""
    with torch.no_grad():
        outs = module(example)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    model = onnx.load(str(path))
    for value, tensor in zip(model.graph.output, outs):
        dims = value.type.tensor_type.shape.dim
        while len(dims):
            dims.pop()
        for size in tensor.shape:
            dims.add().dim_value = int(size)
    onnx.save(model, str(path))


def export_module(module: nn.Module, example: torch.Tensor, path: Path, input_name: str,
                  output_names: tuple[str, ...], opset: int) -> dict:
    """Trace `module` on `example` into `path` with fixed shapes; run onnx.checker; return its shapes."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[input_name], output_names=list(output_names),
                              do_constant_folding=True, external_data=False)
        except Exception as exc:  # the exporter raises many types; report one line
            raise ExportError(f"ONNX export of {path.name} failed: {type(exc).__name__}: {exc}") from None
    _fix_output_shapes(path, module, example)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name}: onnx.checker rejected the export: {str(exc).splitlines()[0]}") from None
    shapes = graph_shapes(onnx.load(str(path)))
    if list(shapes["outputs"]) != list(output_names):
        raise ExportError(f"{path.name}: outputs {list(shapes['outputs'])}, expected {list(output_names)}")
    return shapes


def example_inputs(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Tracing inputs of the right fixed shapes: image [1,3,S,S] and crops [K,3,R,R] in [0,1]."""
    cfg = model.cfg
    p = cfg.preprocess
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, p.global_size, p.global_size, generator=gen)
    crops = torch.rand(cfg.k, 3, p.crop_size, p.crop_size, generator=gen)
    return image, crops


def export_graphs(model: nn.Module, out_dir: str | Path, opset: int = DEFAULT_OPSET) -> dict:
    """Write global.onnx and parts.onnx of a (trained, eval-mode) MGFEN into `out_dir`.

    Returns the manifest's `tensors` entry: {"global": shapes, "parts": shapes}.
    """
    out_dir = Path(out_dir)
    image, crops = example_inputs(model)
    return {
        "global": export_module(GlobalGraph(model), image, out_dir / names.model_file("global"),
                                names.GLOBAL_INPUT, names.EXPORTED_GLOBAL_OUTPUTS, opset),
        "parts": export_module(PartsGraph(model), crops, out_dir / names.model_file("parts"),
                               names.PARTS_INPUT, names.PARTS_OUTPUTS, opset),
    }
