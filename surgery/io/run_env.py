"""The environment through which the supervising CLI process (surgery.io.sandbox) tells its
worker where per-run files go; the parent cleans both up even when the worker is killed.
A module of its own so that the supervisor needs neither saving nor private_copy."""

TEMP_LOG_ENV = "LSTM_SURGERY_TEMP_LOG"  # the log of temporaries (surgery.io.saving)
RUN_DIR_ENV = "LSTM_SURGERY_RUN_DIR"  # scratch space for private copies (surgery.io.private_copy)
