"""Deployment: ONNX export, the exported graphs' format and metadata, and the ONNX Runtime backend of the engine."""
