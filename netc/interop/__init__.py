"""Networks leaving netc (and arriving): a trained network as a standalone C library, and as
ONNX, and ONNX models brought in as a spec and a checkpoint."""
