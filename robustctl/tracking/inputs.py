"""A run's data as MLflow dataset inputs, so the UI's Dataset column, its dataset filters and the
run's lineage show what the run trained and was evaluated on.

One input per split, named ``<dataset>-<split>`` (MLflow keys a dataset by name and digest, so the
three splits need three names), each with:

- digest: the content hash of all three splits (``ImageData.content_hash``): two runs with the same
  digest saw exactly the same images, labels and split;
- source: where the loader read the images from (a folder, or a package's bundled data);
- schema: the image tensor ``[-1, C, H, W]`` float32 in [0, 1] and the int64 labels;
- profile: the split's size, class count and images per class;
- the context tag ``mlflow.data.context``: ``train``, ``validation`` or ``test``.

The inputs are plain dicts (:func:`dataset_inputs`) so an offline run can journal them; the MLflow
entities are built only when they are sent (:func:`to_mlflow`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPLIT_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
CONTEXT_TAG = "mlflow.data.context"


def _schema(image_shape: tuple[int, ...]) -> str:
    def spec(dtype: str, shape: list[int]) -> str:
        return json.dumps([{"type": "tensor", "tensor-spec": {"dtype": dtype, "shape": shape}}])

    return json.dumps(
        {
            "mlflow_tensorspec": {
                "features": spec("float32", [-1, *image_shape]),
                "targets": spec("int64", [-1]),
            }
        }
    )


def dataset_inputs(data: Any) -> list[dict[str, Any]]:
    """The train / validation / test splits of an ``ImageData`` as MLflow dataset inputs."""
    import torch

    digest = data.content_hash()
    source = data.source or f"robustctl:{data.name}"
    source_type = "local" if Path(source).is_absolute() else "code"
    inputs = []
    for split, context in SPLIT_CONTEXTS.items():
        labels = getattr(data, f"y_{split}")
        counts = torch.bincount(labels, minlength=data.num_classes).tolist()
        inputs.append(
            {
                "name": f"{data.name}-{split}",
                "digest": digest,
                "source_type": source_type,
                "source": json.dumps({"uri": source}),
                "schema": _schema(data.image_shape),
                "profile": json.dumps(
                    {
                        "num_rows": len(labels),
                        "num_classes": data.num_classes,
                        "image_shape": list(data.image_shape),
                        "images_per_class": counts,
                    }
                ),
                "context": context,
            }
        )
    return inputs


def to_mlflow(inputs: list[dict[str, Any]]) -> list[Any]:
    """:func:`dataset_inputs` as ``mlflow.entities.DatasetInput`` values."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    return [
        DatasetInput(
            Dataset(
                name=item["name"],
                digest=item["digest"],
                source_type=item["source_type"],
                source=item["source"],
                schema=item["schema"],
                profile=item["profile"],
            ),
            tags=[InputTag(CONTEXT_TAG, item["context"])],
        )
        for item in inputs
    ]
