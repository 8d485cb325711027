"""The order texts are batched in for evaluation and prediction, without torch: the torch path
(stancerun.data.batching) and the ONNX path (stancerun.inference.onnx_predict, which never imports torch) share it."""

from __future__ import annotations


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Evaluation/prediction batches, longest first; results are put back in input order by index."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
