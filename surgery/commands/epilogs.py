"""The examples every `--help` ends with (click epilogs; '\\b' keeps click from rewrapping)."""

FLAGS = """\b
The flags column of the table:
  seq          return_sequences=True: the layer outputs every timestep
  state        return_state=True: the layer already returns its final state
  stateful     stateful=True: the state carries over between batches
  backwards    go_backwards=True: the sequence is read last to first
  init<-graph  its initial state comes from another layer (a seq2seq decoder):
               it gets no state input
  -            none of these"""

EPILOGS = {
    "main": """\b
Examples:
  lstm-surgery inspect model.keras
  lstm-surgery expose-state model.keras --inputs
  lstm-surgery stream model.keras --steps 4
  lstm-surgery COMMAND --help
Shell completion (bash; zsh/fish: zsh_source/fish_source):
  eval "$(_LSTM_SURGERY_COMPLETE=bash_source lstm-surgery)\"""",
    "inspect": FLAGS + """

\b
Examples:
  lstm-surgery inspect model.keras
  lstm-surgery inspect models/*.keras --json        # one JSON line per model
  lstm-surgery inspect model.h5 --plot model.svg    # and a picture of the graph
Exit status: the highest over the models (4: one is not supported, 2: unreadable).""",
    "expose-state": """\b
Examples:
  lstm-surgery expose-state model.keras                     # writes model.exposed.keras
  lstm-surgery expose-state model.keras --inputs -o out/m.keras
  lstm-surgery expose-state a.keras b.h5 -o exposed/ --json # several: -o is a directory
  lstm-surgery expose-state model.keras --plot change.svg   # before/after picture""",
    "verify": """\b
Examples:
  lstm-surgery verify model.keras model.exposed.keras
  lstm-surgery verify model.keras model.exposed.keras --data inputs.npz --json
Exit status: 0 reproduced, 1 not (or the models differ in structure).""",
    "split-seq2seq": """\b
Examples:
  lstm-surgery split-seq2seq translator.keras            # writes translator.split/
  lstm-surgery split-seq2seq translator.keras -o split/ --plot split.svg""",
    "convert": """\b
Examples:
  lstm-surgery convert legacy.h5                          # writes legacy.keras3.keras
  lstm-surgery convert models/*.h5 -o keras3/ --json      # several: -o is a directory""",
    "splice": """\b
Examples:
  lstm-surgery splice encoder.keras decoder.keras --dry-run
  lstm-surgery splice a.keras b.keras --mode weights --map lstm=lstm_1
  lstm-surgery splice a.keras b.keras --mode prime --data warmup.npy -o primed.keras""",
    "stream": """\b
Examples:
  lstm-surgery stream sensor.keras                        # writes sensor.step/ (SavedModel)
  lstm-surgery stream sensor.keras --steps 4 --tflite sensor.tflite
  lstm-surgery stream custom.keras --custom-objects layers.py --per-step MyScale""",
    "diff": """\b
Examples:
  lstm-surgery diff model.keras model.exposed.keras
  lstm-surgery diff a.h5 b.h5 --json | jq .weights.changed
Exit status: 0 identical, 1 different (like diff(1)), 2 unreadable input.""",
    "extract-states": """\b
Examples:
  lstm-surgery extract-states model.keras --data seqs.npy         # writes model.states.npz
  lstm-surgery extract-states model.keras --data 'shards/*.tfrecord' -o states.parquet --trajectory""",
}
