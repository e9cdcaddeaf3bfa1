"""split-seq2seq: a teacher-forced encoder-decoder becomes an encoder and a decoder *step* model.

The split is found from the graph itself, never from layer indices:

- A **hand-over site** is a call of a recurrent layer whose `initial_state` is computed from
  another recurrent layer (its returned states, or any tensor derived from a recurrent layer:
  a Dense "bridge", a Concatenate of Bidirectional states, ...).
- The **encoder** is everything upstream of those initial-state tensors: its inputs are the model
  inputs they depend on, its outputs are the initial states themselves, one per decoder state,
  in decoder-site order (the documented site order) and named like the decoder state input
  they feed: `<site>_<role>_in`.
- The **decoder step** model is everything upstream of the original outputs once the hand-over
  edges are cut. Every recurrent call on that side gets state inputs `<site>_<role>_in` (the
  hand-over sites in place of their original initial state; other decoder-side recurrent
  layers, which started from zeros, too) and state outputs `<site>_<role>`, in the same order,
  after the original inputs and outputs. Fed one time step at a time with the states it
  returned, it reproduces the teacher-forced outputs of the training model.

Both are config surgery on the model's own serialization (the engine's Level/dialect view),
then `expose.build_from_config` + `expose.transfer_weights`. Keras keeps only the part of the
graph that connects each model's inputs to its outputs.

Modules: plan (the split on the config) -> run (live models, the step check, greedy decoding) ->
write (split_seq2seq_file).
"""

from surgery.ops.seq2seq.plan import (
    ENCODER_FILE,
    DECODER_FILE,
    OPERATION,
    Handover,
    SplitPlan,
    split_config,
)
from surgery.ops.seq2seq.run import (
    Seq2SeqSplit,
    split_seq2seq,
    input_names,
    StepReport,
    sample_inputs,
    stepwise_outputs,
    check_stepwise,
    greedy_decode,
)
from surgery.ops.seq2seq.write import (
    SplitResult,
    split_seq2seq_file,
    format_result,
    result_dict,
)

__all__ = [
    "ENCODER_FILE",
    "DECODER_FILE",
    "OPERATION",
    "Handover",
    "SplitPlan",
    "split_config",
    "Seq2SeqSplit",
    "split_seq2seq",
    "input_names",
    "StepReport",
    "sample_inputs",
    "stepwise_outputs",
    "check_stepwise",
    "greedy_decode",
    "SplitResult",
    "split_seq2seq_file",
    "format_result",
    "result_dict",
]
