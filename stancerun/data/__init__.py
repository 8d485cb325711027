"""Rows -> labelled splits (CSV/JSONL readers, carving), data checks, and batching for the model."""
