"""A saved run at work: predict, evaluate on new data, export (merged or ONNX) and serve."""
