"""Export to ONNX, int8 quantization and parity checks."""

__all__: list[str] = []
