"""A fake `tensorrt` module that behaves like the real Python API (checked against the tensorrt-stubs
10.13 signatures and NVIDIA's samples), for TensorRT 8.5, 10.x and 11.x behaviour.

What is real about it: Dims objects (sequence protocol, not tuples), DataType / TensorIOMode / BuilderFlag
/ NetworkDefinitionCreationFlag / MemoryPoolType as enum members (not ints, strings or numpy types:
`TensorIOMode.INPUT == 1` is False, `int(flag)` works), `trt.nptype` (raising AttributeError on
8.5.x, as the real one does with numpy >= 1.24), `set_tensor_address` returning a bool,
`build_serialized_network` returning an IHostMemory (a buffer) or None, `deserialize_cuda_engine` returning None for a plan of another TensorRT version or GPU, `OnnxParser.parse` returning False with
ParserError objects, the binding-index API present in 8.5 and absent from 10, the INT8/FP16 builder flags
absent from 11, TF32 on by default, strongly typed networks refusing precision flags, an 8.x network
without EXPLICIT_BATCH refused by the ONNX parser, and engines that need a current CUDA context.

Execution: the "plan" is a JSON header (version, GPU, flags, FP32-pinned layers) + the ONNX bytes; an
execution context reads its inputs from tests/fake_cuda.py device memory at the addresses set, runs the
ONNX with onnxruntime (graph optimisations off) and writes the outputs back. Reduced precision is
emulated: with the FP16 flag every float tensor is rounded through float16 except the outputs of layers
pinned to FP32 (ILayer.precision / set_output_type, obeyed under OBEY_/PREFER_PRECISION_CONSTRAINTS);
with TF32 the outputs of Conv/MatMul/Gemm (same 10-bit mantissa). An int8 build (INT8 flag, or strongly
typed) runs every MatMul as an int8 kernel (_int8_kernels: per-tensor quantised inputs, exact integer
accumulation, per-tensor requantised output) -- not the Q/DQ simulation export's engine check uses as
its reference, so the check sees a real, small int8 error; `gpu.int8_bits = 3` plants a larger one.

    gpu = FakeGpu(); trt = make_tensorrt(gpu, "10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    gpu.fail["build"] = 0         # build_serialized_network returns None (also "parse", "deserialize",
                                  # "context", "execute", "set_tensor_address")
    trt.last_build                # {"flags": [...], "strongly_typed": ..., "workspace": ...} of the last build
"""

from __future__ import annotations

import enum
import json
import types

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

MAGIC = b"FAKETRT1"
ROUNDED_BY_TF32 = ("Conv", "MatMul", "Gemm")


class _Enum(enum.Enum):
    """pybind11-style enum member: int() and index() work, equality with ints does not."""

    def __int__(self) -> int:
        return int(self.value)

    def __index__(self) -> int:
        return int(self.value)


def _enum(name: str, members: dict) -> type:
    return _Enum(name, members)


class Dims:
    """trt.Dims: __len__ and __getitem__ (so tuple(dims) works), equal to a tuple/list, not a tuple."""

    MAX_DIMS = 8

    def __init__(self, shape=()) -> None:
        self._d = [int(v) for v in shape]

    def __len__(self) -> int:
        return len(self._d)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self._d[i])
        return self._d[i]  # IndexError past the end ends iteration, as in pybind11

    def __eq__(self, other) -> bool:
        return isinstance(other, (tuple, list, Dims)) and list(other) == self._d

    __hash__ = None

    def __repr__(self) -> str:
        return f"({', '.join(map(str, self._d))})"


def _layer_name(node) -> str:
    return node.name or node.output[0]


def _round_fp16(model: onnx.ModelProto, op_types=None, keep=()) -> onnx.ModelProto:
    """A copy of `model` whose float node outputs (of `op_types`, or all) pass through float16 and back,
    except the outputs of the nodes whose layer name is in `keep` (layers pinned to FP32, obeyed)."""
    model = onnx.shape_inference.infer_shapes(model)
    types_ = {v.name: v.type.tensor_type.elem_type for v in
              list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    nodes = []
    for node in model.graph.node:
        nodes.append(node)
        if (op_types is not None and node.op_type not in op_types) or _layer_name(node) in keep:
            continue
        for i, out in enumerate(node.output):
            if types_.get(out) != TensorProto.FLOAT:
                continue
            raw = f"{out}__exact"
            node.output[i] = raw
            # the Identity between the casts: onnxruntime 1.16 drops a bare float->half->float Cast pair
            # even with graph optimisations off, which would leave the tensor unrounded
            nodes += [helper.make_node("Cast", [raw], [f"{out}__h"], to=TensorProto.FLOAT16),
                      helper.make_node("Identity", [f"{out}__h"], [f"{out}__h2"]),
                      helper.make_node("Cast", [f"{out}__h2"], [out], to=TensorProto.FLOAT)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _int8_kernels(model: onnx.ModelProto, bits: int) -> onnx.ModelProto:
    """A copy of `model` whose MatMul nodes compute as an int8 kernel does, not as the check's reference
    (onnxruntime in FP32 on the dequantised values): each input quantised per tensor to `bits`-bit
    symmetric integers (scale = max|x| / (2^(bits-1) - 1), round half to even), the integer product
    accumulated exactly (integers in float32: exact while |sum| < 2^24, true for the fake bundles' K = 3),
    rescaled, and the output requantised per tensor to the same number of bits. bits = 8 is TensorRT's
    int8; fewer bits is a planted precision loss the engine check must catch."""
    qmax = float(2 ** (bits - 1) - 1)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = [helper.make_tensor("__q_max", TensorProto.FLOAT, [], [qmax]),
             helper.make_tensor("__q_tiny", TensorProto.FLOAT, [], [1e-12])]
    nodes = []

    def quantised(x: str, tag: str) -> tuple:
        """Nodes giving (integers, scale) of tensor x, per-tensor symmetric."""
        n = [helper.make_node("Abs", [x], [f"{tag}_abs"]),
             helper.make_node("ReduceMax", [f"{tag}_abs"], [f"{tag}_max"], keepdims=0),
             helper.make_node("Div", [f"{tag}_max", "__q_max"], [f"{tag}_s0"]),
             helper.make_node("Max", [f"{tag}_s0", "__q_tiny"], [f"{tag}_s"]),
             helper.make_node("Div", [x, f"{tag}_s"], [f"{tag}_x"]),
             helper.make_node("Round", [f"{tag}_x"], [f"{tag}_q"])]
        return n, f"{tag}_q", f"{tag}_s"

    for i, node in enumerate(model.graph.node):
        if node.op_type != "MatMul":
            nodes.append(node)
            continue
        tag = f"__i8_{i}"
        a_nodes, qa, sa = quantised(node.input[0], f"{tag}a")
        b_nodes, qb, sb = quantised(node.input[1], f"{tag}b")
        out = node.output[0]
        nodes += a_nodes + b_nodes + [
            helper.make_node("MatMul", [qa, qb], [f"{tag}_acc"]),  # the int32 accumulator
            helper.make_node("Mul", [sa, sb], [f"{tag}_sab"]),
            helper.make_node("Mul", [f"{tag}_acc", f"{tag}_sab"], [f"{tag}_y"])]
        y_nodes, qy, sy = quantised(f"{tag}_y", f"{tag}y")  # requantised to the next layer's int8
        nodes += y_nodes + [helper.make_node("Mul", [qy, sy], [out])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    return model


def make_tensorrt(gpu, version: str = "10.3.0") -> types.ModuleType:
    """A fresh fake tensorrt module of `version` on the fake GPU `gpu` (tests/fake_cuda.FakeGpu)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.last_build = None
    trt.messages = []

    dtypes = {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5}
    if major >= 10:
        dtypes.update(FP8=6, BF16=7, INT64=8)
    DataType = _enum("DataType", dtypes)
    TensorIOMode = _enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    flags = {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5,
             "TF32": 6, "SPARSE_WEIGHTS": 7, "SAFETY_SCOPE": 8, "OBEY_PRECISION_CONSTRAINTS": 9,
             "PREFER_PRECISION_CONSTRAINTS": 10, "DIRECT_IO": 11, "REJECT_EMPTY_ALGORITHMS": 12}
    if major >= 10:
        flags.update(VERSION_COMPATIBLE=13, EXCLUDE_LEAN_RUNTIME=14, FP8=15, BF16=17)
    if major >= 11:
        for gone in ("FP16", "INT8"):  # removed with the implicit-quantisation API
            del flags[gone]
    BuilderFlag = _enum("BuilderFlag", flags)
    net_flags = {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1} if major < 10 else {"EXPLICIT_BATCH": 0,
                                                                                    "STRONGLY_TYPED": 1}
    if major >= 11:
        net_flags = {"STRONGLY_TYPED": 1}
    NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", net_flags)
    MemoryPoolType = _enum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2,
                                              "DLA_GLOBAL_DRAM": 3, "TACTIC_DRAM": 4})
    LayerType = _enum("LayerType", {"CONVOLUTION": 0, "MATRIX_MULTIPLY": 17, "QUANTIZE": 32,
                                    "DEQUANTIZE": 33, "REDUCE": 14, "POOLING": 3, "IDENTITY": 20,
                                    "ELEMENTWISE": 9, "OTHER": 99})
    np_of = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
             DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8}

    nptype_broken = version.split(".")[:2] == ["8", "5"]  # fixed in 8.6 (TensorRT issues 2557, 2701)

    def nptype(trt_type):
        if nptype_broken:  # 8.5.x maps BOOL to np.bool, gone from numpy 1.24 on
            raise AttributeError("module 'numpy' has no attribute 'bool'.\n`np.bool` was a deprecated alias "
                                 "for the builtin `bool`.")
        if not isinstance(trt_type, DataType):
            raise TypeError(f"nptype() expects a tensorrt.DataType, got {type(trt_type).__name__}")
        return np_of[trt_type]

    Severity = _enum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4})

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING = Severity.INTERNAL_ERROR, Severity.ERROR, Severity.WARNING
        INFO, VERBOSE = Severity.INFO, Severity.VERBOSE

        def __init__(self, min_severity=Severity.WARNING) -> None:
            _need(min_severity, Severity, "Logger.__init__")
            self.min_severity = min_severity

        def log(self, severity, msg: str) -> None:
            trt.messages.append((int(severity), msg))

    Logger.Severity = Severity

    def _need(value, kind, what):
        if not isinstance(value, kind):
            raise TypeError(f"{what}(): incompatible function arguments: expected {kind.__name__}, "
                            f"got {type(value).__name__}")

    class ITensor:
        def __init__(self, name, shape, dtype=None) -> None:
            self.name, self.shape, self.dtype = name, Dims(shape), dtype or DataType.FLOAT

    onnx_types = {TensorProto.FLOAT: DataType.FLOAT, TensorProto.FLOAT16: DataType.HALF,
                  TensorProto.INT8: DataType.INT8, TensorProto.INT32: DataType.INT32,
                  TensorProto.INT64: getattr(DataType, "INT64", DataType.INT32), TensorProto.BOOL: DataType.BOOL,
                  TensorProto.UINT8: DataType.UINT8}

    class ILayer:
        """One parsed node: name, type, its input/output ITensors (None for an omitted optional input),
        precision (setting it marks precision_is_set) and per-output types (set_output_type)."""

        def __init__(self, node, tensors: dict) -> None:
            self.name = _layer_name(node)
            self.type = {"Conv": LayerType.CONVOLUTION, "MatMul": LayerType.MATRIX_MULTIPLY,
                         "QuantizeLinear": LayerType.QUANTIZE, "DequantizeLinear": LayerType.DEQUANTIZE
                         }.get(node.op_type, LayerType.OTHER)
            self._precision = DataType.FLOAT
            self.precision_is_set = False
            self._inputs = [tensors.get(n) if n else None for n in node.input]
            self._outputs = [tensors[n] for n in node.output]
            self.output_types = {}

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_input(self, index: int):
            return self._inputs[index]

        def get_output(self, index: int):
            return self._outputs[index]

        @property
        def precision(self):
            return self._precision

        @precision.setter
        def precision(self, dtype) -> None:
            _need(dtype, DataType, "ILayer.precision")
            self._precision, self.precision_is_set = dtype, True

        def set_output_type(self, index: int, dtype) -> None:
            _need(dtype, DataType, "set_output_type")
            if not 0 <= index < len(self._outputs):
                raise IndexError(index)
            self.output_types[index] = dtype

        def get_output_type(self, index: int):
            return self.output_types.get(index, self._outputs[index].dtype)

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.model = None
            self.layers, self.inputs, self.outputs = [], [], []

        @property
        def num_layers(self):
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_output(self, i):
            return self.outputs[i]

    def _has(flags: int, name: str) -> bool:
        member = getattr(NetworkDefinitionCreationFlag, name, None)
        return member is not None and bool(flags & (1 << int(member)))

    class ParserError:
        def __init__(self, desc: str, node: int = -1) -> None:
            self._desc, self._node = desc, node

        def desc(self):
            return self._desc

        def node(self):
            return self._node

        def code(self):
            return 8  # ErrorCode.UNSUPPORTED_GRAPH

        def __str__(self):
            return f"In node {self._node} (parseGraph): UNSUPPORTED_NODE: {self._desc}"

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            _need(network, INetworkDefinition, "OnnxParser.__init__")
            self.network, self.errors = network, []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

        def parse(self, model, path=None) -> bool:
            data = bytes(model)
            if major < 10 and not _has(self.network.flags, "EXPLICIT_BATCH"):
                self.errors.append(ParserError("Network must have explicit batch dimension (create it with "
                                               "NetworkDefinitionCreationFlag.EXPLICIT_BATCH)\n"))
                return False
            if gpu.failing("parse"):
                self.errors.append(ParserError("No importer registered for op: FancyOp\nAssertion failed", 3))
                return False
            try:
                proto = onnx.load_from_string(data)
                onnx.checker.check_model(proto)
            except Exception as exc:
                self.errors.append(ParserError(f"Failed to parse ONNX model: {type(exc).__name__}"))
                return False
            net = self.network
            net.model = proto
            typed = onnx.shape_inference.infer_shapes(proto)
            tensors = {}
            for v in list(typed.graph.value_info) + list(typed.graph.input) + list(typed.graph.output):
                tensors[v.name] = ITensor(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim],
                                          onnx_types.get(v.type.tensor_type.elem_type, DataType.FLOAT))
            for init in typed.graph.initializer:
                tensors[init.name] = ITensor(init.name, list(init.dims), onnx_types.get(init.data_type, DataType.FLOAT))
            for n in typed.graph.node:
                for o in n.output:
                    tensors.setdefault(o, ITensor(o, []))
            net.layers = [ILayer(n, tensors) for n in proto.graph.node]
            inits = {i.name for i in proto.graph.initializer}
            net.inputs = [ITensor(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim])
                          for v in proto.graph.input if v.name not in inits]
            net.outputs = [ITensor(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim])
                           for v in proto.graph.output]
            return True

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags = 1 << int(BuilderFlag.TF32)  # TensorRT enables TF32 by default
            self.pools = {MemoryPoolType.WORKSPACE: 1 << 40}

        def set_flag(self, flag) -> None:
            _need(flag, BuilderFlag, "set_flag")
            self.flags |= 1 << int(flag)

        def clear_flag(self, flag) -> None:
            _need(flag, BuilderFlag, "clear_flag")
            self.flags &= ~(1 << int(flag))

        def get_flag(self, flag) -> bool:
            _need(flag, BuilderFlag, "get_flag")
            return bool(self.flags & (1 << int(flag)))

        def set_memory_pool_limit(self, pool, pool_size: int) -> None:
            _need(pool, MemoryPoolType, "set_memory_pool_limit")
            _need(pool_size, int, "set_memory_pool_limit")
            self.pools[pool] = pool_size

        def get_memory_pool_limit(self, pool) -> int:
            return self.pools[pool]

    class IHostMemory(bytes):
        @property
        def nbytes(self):
            return len(self)

        @property
        def dtype(self):
            return DataType.UINT8

    class Builder:
        def __init__(self, logger) -> None:
            _need(logger, Logger, "Builder.__init__")
            self.logger = logger
            self.platform_has_tf32 = self.platform_has_fast_fp16 = self.platform_has_fast_int8 = True

        def create_network(self, flags: int = 0):
            _need(flags, int, "create_network")
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def build_serialized_network(self, network, config):
            _need(network, INetworkDefinition, "build_serialized_network")
            _need(config, IBuilderConfig, "build_serialized_network")
            set_flags = sorted(f.name for f in BuilderFlag if config.flags & (1 << int(f)))
            strongly = _has(network.flags, "STRONGLY_TYPED")
            if network.model is None:
                self.logger.log(Logger.ERROR, "Network must have at least one output")
                return None
            refused = [f for f in ("FP16", "INT8", "BF16", "FP8") if f in set_flags]
            if strongly and refused:
                self.logger.log(Logger.ERROR, f"BuilderFlag {refused} set on a strongly typed network")
                return None
            if gpu.failing("build"):
                self.logger.log(Logger.ERROR, "Error Code 10: Could not find any implementation for node")
                return None
            obeyed = "OBEY_PRECISION_CONSTRAINTS" in set_flags or "PREFER_PRECISION_CONSTRAINTS" in set_flags
            fp32 = sorted(layer.name for layer in network.layers if obeyed and layer.precision_is_set
                          and layer.precision == DataType.FLOAT)
            trt.last_build = {"flags": set_flags, "strongly_typed": strongly,
                              "workspace": config.pools[MemoryPoolType.WORKSPACE], "fp32_layers": fp32}
            header = {"trt": version, "gpu": gpu.name, "flags": set_flags, "strongly_typed": strongly,
                      "fp32_layers": fp32}
            return IHostMemory(MAGIC + json.dumps(header).encode() + b"\n" + network.model.SerializeToString())

    class IExecutionContext:
        def __init__(self, engine) -> None:
            self.engine, self.addresses = engine, {}

        def set_tensor_address(self, name: str, memory: int) -> bool:
            _need(memory, int, "set_tensor_address")
            if name not in self.engine.io or gpu.failing("set_tensor_address"):
                trt.messages.append((1, f"setTensorAddress: unknown tensor {name}"))
                return False
            self.addresses[name] = memory
            return True

        def get_tensor_address(self, name: str) -> int:
            return self.addresses.get(name, 0)

        def get_tensor_shape(self, name: str):
            return Dims(self.engine.io[name][0])

        def execute_async_v3(self, stream_handle: int) -> bool:
            _need(stream_handle, int, "execute_async_v3")
            eng = self.engine
            if (not gpu.has_context or stream_handle not in gpu.streams or set(self.addresses) != set(eng.io)
                    or gpu.failing("execute")):
                trt.messages.append((1, "enqueueV3 failed"))
                return False
            feeds = {}
            for name, (shape, mode) in eng.io.items():
                if mode is TensorIOMode.INPUT:
                    nbytes = int(np.prod(shape)) * 4
                    feeds[name] = np.frombuffer(gpu.read(self.addresses[name], nbytes), np.float32).reshape(shape)
            outs = eng.session.run(None, feeds)
            for name, value in zip([o.name for o in eng.session.get_outputs()], outs):
                gpu.write(self.addresses[name], np.ascontiguousarray(value, np.float32).tobytes())
            return True

    class ICudaEngine:
        def __init__(self, header: dict, proto: onnx.ModelProto) -> None:
            self.header = header
            inits = {i.name for i in proto.graph.initializer}
            self.io = {}
            for v in proto.graph.input:
                if v.name not in inits:
                    self.io[v.name] = ([d.dim_value for d in v.type.tensor_type.shape.dim], TensorIOMode.INPUT)
            for v in proto.graph.output:
                self.io[v.name] = ([d.dim_value for d in v.type.tensor_type.shape.dim], TensorIOMode.OUTPUT)
            flags = header["flags"]
            if "INT8" in flags or header["strongly_typed"]:  # int8 kernels (only int8 builds set either)
                proto = _int8_kernels(proto, gpu.int8_bits)
            if "FP16" in flags and not header["strongly_typed"]:
                proto = _round_fp16(proto, keep=set(header.get("fp32_layers", ())))
            elif "TF32" in flags:
                proto = _round_fp16(proto, ROUNDED_BY_TF32, keep=set(header.get("fp32_layers", ())))
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            self._names = list(self.io)

        @property
        def num_io_tensors(self) -> int:
            return len(self._names)

        def get_tensor_name(self, index: int) -> str:
            return self._names[index]

        def get_tensor_shape(self, name: str):
            return Dims(self.io[name][0])

        def get_tensor_dtype(self, name: str):
            return DataType.FLOAT

        def get_tensor_mode(self, name: str):
            return self.io[name][1] if name in self.io else TensorIOMode.NONE

        def create_execution_context(self):
            if gpu.failing("context"):
                trt.messages.append((1, "out of memory creating an execution context"))
                return None
            return IExecutionContext(self)

    if major < 10:  # the binding-index API (removed in TensorRT 10)
        ICudaEngine.num_bindings = property(lambda self: len(self._names))
        ICudaEngine.get_binding_index = lambda self, name: self._names.index(name) if name in self._names else -1
        ICudaEngine.binding_is_input = lambda self, i: self.io[self._names[i]][1] is TensorIOMode.INPUT
        ICudaEngine.get_binding_shape = lambda self, i: Dims(self.io[self._names[i]][0])

    class Runtime:
        def __init__(self, logger) -> None:
            _need(logger, Logger, "Runtime.__init__")
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            if not gpu.has_context or gpu.failing("deserialize"):
                self.logger.log(Logger.ERROR, "Cuda Runtime (invalid device context)")
                return None
            if not data.startswith(MAGIC):
                self.logger.log(Logger.ERROR, "Error Code 1: Serialization (Magic tag does not match)")
                return None
            head, _, body = data[len(MAGIC):].partition(b"\n")
            header = json.loads(head)
            if header["trt"] != version or header["gpu"] != gpu.name:
                self.logger.log(Logger.ERROR, "Error Code 6: The engine plan file is not compatible with this "
                                "version of TensorRT or this GPU")
                return None
            return ICudaEngine(header, onnx.load_from_string(body))

    for obj in (DataType, TensorIOMode, BuilderFlag, NetworkDefinitionCreationFlag, MemoryPoolType, LayerType,
                Logger, ITensor, ILayer, INetworkDefinition, ParserError, OnnxParser, IBuilderConfig, IHostMemory,
                Builder, IExecutionContext, ICudaEngine, Runtime):
        setattr(trt, obj.__name__, obj)
    trt.Dims = Dims
    trt.nptype = nptype
    return trt
