# Developer entry points:
#   make venv   create/refresh .venv (torch + triton, then this package editable with [test])
#   make test   run the test suite in .venv
#   make run    run scripts/main_job.py in .venv
#
# TORCH_SPEC / TRITON_SPEC are passed to pip as-is and may carry extra pip arguments, e.g.
#   make test TORCH_SPEC="torch==2.8.0 --index-url https://download.pytorch.org/whl/cpu" \
#             TRITON_SPEC="triton==3.4.0"
# They are installed by two separate pip calls so that an --index-url in one spec does not
# apply to the other.

PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.14.1
TRITON_SPEC ?= triton==3.8.0
PYTEST_ARGS ?=
ARCHS       ?=

VENV_PY    := $(VENV)/bin/python
STAMP      := $(VENV)/.sageattention-installed
SPECS_FILE := $(VENV)/.sageattention-specs
SPECS      := torch: $(TORCH_SPEC) | triton: $(TRITON_SPEC)

.PHONY: venv test run FORCE

venv: $(STAMP)

# Rewritten only when the requested specs differ from the last install, so changing
# TORCH_SPEC/TRITON_SPEC re-runs the install while an unchanged venv is left alone.
$(SPECS_FILE): FORCE
	@mkdir -p $(VENV)
	@if [ "$$(cat $@ 2>/dev/null)" != '$(SPECS)' ]; then echo '$(SPECS)' > $@; fi

# Re-installs when pyproject.toml, setup.py or the specs change.
$(STAMP): pyproject.toml setup.py $(SPECS_FILE)
	@test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --upgrade pip
	$(VENV_PY) -m pip install $(TORCH_SPEC)
	$(VENV_PY) -m pip install $(TRITON_SPEC)
	SAGEATTENTION_SKIP_CUDA_BUILD=1 $(VENV_PY) -m pip install -e '.[test]'
	@touch $@

# TRITON_INTERPRET is unset: the tests set what they need themselves.
test: venv
	env -u TRITON_INTERPRET $(VENV_PY) -m pytest -q $(PYTEST_ARGS)

# ARCHS (e.g. "8.0") limits the GPU archs of the wheel build; default: the host row's list.
run: venv
	ARCHS="$(ARCHS)" $(VENV_PY) scripts/main_job.py

FORCE:
