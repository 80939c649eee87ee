"""Inference: run folders -> fold averages -> blends -> a checked submission; ONNX export; the in-memory scorer."""
