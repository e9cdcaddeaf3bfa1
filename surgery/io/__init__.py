"""File in, file out: format readers and writers (formats/), the static safety scan, safe loading,
Keras family adapters, where a file keeps its weights, atomic staged writes and manifests.

Nothing here imports surgery.ops or surgery.check; surgery.graph only where a format needs the
registry or a config walk.
"""
