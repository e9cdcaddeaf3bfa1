"""Pairs of layers between two live models built from related configs, matched by name.

Every operation that moves weights from one model onto a rebuilt one (copying them, sharing
variables, or supplying some itself) walks the two models the same way: by layer name,
through nested models, refusing a weighted layer that has no namesake.
"""

from __future__ import annotations

from typing import Callable, Iterator

from surgery.errors import UsageError


def matched_layers(source, target, *, is_model: Callable[[object], bool], role: str = "rebuilt",
                   source_name: str = "the source model", supplied=frozenset()) -> Iterator[tuple]:
    """(target layer, its namesake in `source`) for every weighted layer of `target`, through
    nested models. A layer named in `supplied` comes with None: the caller gives its weights."""
    by_name = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        if layer.name in supplied:
            yield layer, None
            continue
        origin = by_name.get(layer.name)
        if origin is None:
            if layer.weights:
                raise UsageError(f"{role} layer {layer.name!r} has weights but no counterpart in {source_name}")
            continue
        if is_model(layer) and is_model(origin):
            yield from matched_layers(origin, layer, is_model=is_model, role=role, source_name=source_name,
                                      supplied=supplied)
        elif layer.weights:
            yield layer, origin
