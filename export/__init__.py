"""mer's export stage: PyTorch -> ONNX (fp32, fp16) -> TensorRT engine."""
