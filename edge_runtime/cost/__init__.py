"""What a bundle costs per frame: MACs, parameter and activation bytes per graph (graph_cost, from the
ONNX files), the target Jetsons and their estimated INT8 rates (devices, the one device table), and a
bundle's estimate on each (estimate; `mgfen-bench --estimate`, the export report's `cost` section).
Estimates only, until measured on a device. No torch."""
