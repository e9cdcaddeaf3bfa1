# The two commands a new machine needs: `make demo` and `make test` (see README).
PYTHON ?= python3
PIP_FLAGS ?= -q --disable-pip-version-check --root-user-action=ignore
OUT ?= out

.PHONY: install demo test test-slow test-real bench fixtures clean

install:
	$(PYTHON) -m pip install $(PIP_FLAGS) -e '.[test,beam]'

demo: install
	@mkdir -p $(OUT)
	@echo "== before: what is inside the trained model (static, TensorFlow not loaded)"
	lstm-surgery inspect fixtures/models/lstm_masking.keras
	@echo
	@echo "== surgery: expose h and c of every LSTM as outputs, and add initial-state inputs"
	lstm-surgery expose-state fixtures/models/lstm_masking.keras -o $(OUT)/lstm_masking.exposed.keras --inputs --force
	@echo
	@echo "== after: the same input through both models"
	$(PYTHON) examples/before_after.py fixtures/models/lstm_masking.keras $(OUT)/lstm_masking.exposed.keras

test: install
	$(PYTHON) -m pytest -q -n 2

# The slow tests include rendering a --plot SVG in headless Chromium (from the system packages).
test-slow: install
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PYTHON) -m pytest -q -n 2 -m slow

# Real trained models from public packages (downloads them once into ~/.cache/lstm-surgery-real).
test-real: install
	$(PYTHON) tests/real/fetch.py
	$(PYTHON) -m pytest -q -p no:xdist -m real tests/real

# BENCH_FLAGS=--big adds the 1 GB expose-state runs (the naive route alone takes minutes).
BENCH_FLAGS ?=
bench: install
	$(PYTHON) benchmarks/run.py
	$(PYTHON) benchmarks/expose_bench.py $(BENCH_FLAGS)
	$(PYTHON) benchmarks/splice_bench.py --size-mb 256
	$(PYTHON) benchmarks/startup.py
	$(PYTHON) benchmarks/stream_latency.py

fixtures:
	$(PYTHON) fixtures/build.py

clean:
	rm -rf $(OUT) build *.egg-info
