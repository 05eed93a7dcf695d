"""MGFEN scanner runtime: numpy/OpenCV preprocessing, ROI and voting maths, bundle loading, backends,
sources, scan sessions and sinks. Imports no torch: it runs on the device with onnxruntime or TensorRT."""

__version__ = "0.1.0"
