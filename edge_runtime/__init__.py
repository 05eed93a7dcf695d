"""MGFEN scanner runtime: numpy/OpenCV preprocessing, ROI and voting maths, bundle loading, backends,
sources, scan sessions and sinks. Imports no torch: it runs on the device with onnxruntime or TensorRT."""

# The one version number of the toolkit (setup.cfg reads it: `version = attr: edge_runtime.__version__`).
__version__ = "0.2.0"
