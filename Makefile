# minirun: `make run` builds everything and runs a demo container; `make test` runs the whole suite.
# Every target does what it needs first, starting from a fresh Debian machine (run as root).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# busybox-static: the test rootfs; libcap-dev: python-prctl; libc6-dev: static probe and trampoline;
# runc: the reference the benchmark compares against; libseccomp-dev: the seccomp work; podman (brings
# conmon): tests/integration/test_podman.py drives minirun as its runtime;
# containerd: containerd, ctr and containerd-shim-runc-v2 for tests/integration/test_containerd.py;
# tests/vm/packages.txt: qemu and a Debian kernel for the cgroup v2 VM (see tests/vm/README.md).
VM_PACKAGES := $(shell grep -v '^\s*\(\#\|$$\)' tests/vm/packages.txt)
SYSTEM_PACKAGES := $(sort busybox-static libcap-dev libc6-dev gcc make iproute2 runc libseccomp-dev podman containerd $(VM_PACKAGES))
SHARED := ../shared

.PHONY: deps install rootfs run test unit integration lint bench clean

deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# compileall runs every time (it only rewrites what changed): with PYTHONDONTWRITEBYTECODE set, as on
# these machines, Python would otherwise recompile minirun's sources on every single command.
install: deps $(VENV)/.installed
	@$(BIN)/python -m compileall -q minirun >/dev/null

# editable_mode=compat: a plain path entry; the default finder costs ~10 ms of imports per command.
$(VENV)/.installed: pyproject.toml setup.py bin/minirun csrc/shim.c csrc/shim.h csrc/build_shim.py csrc/trampoline.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	touch $@

rootfs: deps
	bash rootfs/build.sh

run: install rootfs
	bash scripts/demo.sh

lint: install
	$(BIN)/ruff check minirun tests bench csrc setup.py bin/minirun
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q tests/unit

integration: install rootfs
	$(BIN)/pytest -q tests/integration

test: install rootfs lint
	$(BIN)/pytest -q tests
	@if [ -x $(SHARED)/tools/leakcheck ]; then \
	  out=$$($(SHARED)/tools/leakcheck); \
	  if [ -n "$$out" ]; then echo "leakcheck: the tests left this behind:"; echo "$$out"; exit 1; fi; \
	fi

bench: install rootfs
	$(BIN)/python bench/bench.py --max-ratio 2.0

clean:
	rm -rf $(VENV) build *.egg-info minirun/_shim*.so minirun/libexec rootfs/busybox
