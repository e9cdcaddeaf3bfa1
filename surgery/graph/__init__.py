"""The editable model config: the layer registry, one functional level, recurrent sites, the one
rewiring engine (state outputs and inputs), explicit masks and the Keras 2 -> 3 translation.
"""
