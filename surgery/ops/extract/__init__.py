"""extract-states: a saved model's recurrent states over a whole dataset (see core.extract_states)."""

from surgery.ops.extract.core import ExtractResult, build_extractor, extract_states

__all__ = ["ExtractResult", "build_extractor", "extract_states"]
