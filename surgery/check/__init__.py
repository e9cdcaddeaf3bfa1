"""Is it right? The NumPy oracle (oracle, cells, activations), model-vs-model verification, the
one tolerance policy, the one report type (report.CheckReport) and the static structure diff.
Uses surgery.graph and surgery.io, never surgery.ops.
"""
