"""Backends that build and run the exported graphs (ONNX Runtime here; TensorRT on GPU machines)."""
