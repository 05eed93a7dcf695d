"""Running the graphs: onnxruntime and native TensorRT behind one Backend interface (backends), the CUDA
memory and streams TensorRT needs (trt_buffers), the engine cache beside a bundle (engine_cache) and what
machine it all runs on (device_info)."""
