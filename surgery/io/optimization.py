"""tensorflow-model-optimization (tfmot) support: pruned and clustered recurrent layers.

Wrapped layers are found statically through `registry.WRAPPER_CLASSES`. Loading them needs
tfmot's own classes, supplied here from the installed package (never from the file), and
`strip` removes the wrappers with tfmot's own strip functions.
"""

from __future__ import annotations

from surgery.graph.level import walk_values
from surgery.io.quiet import import_keras, quiet
from surgery.graph.registry import WRAPPER_CLASSES


def uses_wrappers(config: dict | None) -> bool:
    return bool(wrapper_classes(config))


def wrapper_classes(config: dict | None) -> list[str]:
    """The model-optimization wrapper classes a model config uses, sorted."""
    return sorted({item["class_name"] for item in walk_values(config or {})
                   if isinstance(item, dict) and item.get("class_name") in WRAPPER_CLASSES})


def _tfmot():
    import_keras()  # quiet TensorFlow first
    with quiet():
        import tensorflow_model_optimization as tfmot
    return tfmot


def custom_objects() -> dict:
    """tfmot's wrapper classes and schedules, by the class names written into configs."""
    tfmot = _tfmot()
    from tensorflow_model_optimization.python.core.clustering.keras import cluster_wrapper
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    objects = {}
    with tfmot.sparsity.keras.prune_scope():
        from tf_keras.utils import get_custom_objects

        objects.update(get_custom_objects())
    objects.update({
        "PruneLowMagnitude": pruning_wrapper.PruneLowMagnitude,
        "ClusterWeights": cluster_wrapper.ClusterWeights,
        "ClusterWeightsRNN": cluster_wrapper.ClusterWeightsRNN,
        "ClusterWeightsMHA": cluster_wrapper.ClusterWeightsMHA,
    })
    return objects


def strip(model):
    """The model without pruning/clustering wrappers (tfmot's strip functions; values kept)."""
    tfmot = _tfmot()
    with quiet():
        model = tfmot.sparsity.keras.strip_pruning(model)
        return tfmot.clustering.keras.strip_clustering(model)
