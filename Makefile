# The two commands of the README: `make demo` (set-up + the local scaling sweep with its report)
# and `make test` (set-up + the test suite). Both are safe to repeat.
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results

.PHONY: install install-test demo test test-fast clean

install:
	VENV=$(VENV) tools/install.sh

# Test extras: pytest, Ray Train (its tests run a real local Ray), DeepSpeed (ZeRO parity tests),
# MLflow and TensorBoard (export tests) and torchft (its recovery engine's tests); as root with apt,
# also the system packages of the launcher tests (Slurm,
# munge, iproute2) and Chromium (the HTML report's headless-browser test).
install-test:
	VENV=$(VENV) tools/install.sh dev,ray,deepspeed,mlflow,tensorboard,torchft
	tools/system-deps.sh --check

# A weak-scaling ResNet-50 sweep over 1, 2 and 4 gloo processes on this machine's CPU; the
# network is the real ResNet-50 structure at a quarter of the width and 64x64 inputs.
demo: install
	$(BIN)/trainscale sweep --workload resnet50 --parallel ddp --launcher local --nproc 1,2,4 \
	  --scaling weak --batch-size 16 --steps 40 --warmup 10 --repeats 3 \
	  --set model.width=0.25 --set model.resolution=64 --set model.num_classes=100 --out $(OUT)

test: install-test
	$(BIN)/python -m pytest

test-fast: install-test
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
