# imageci — the two commands: `make run` and `make test`. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# tmt, the peer of bench/podman_vs_tmt.py (its own venv: its dependencies are not ours)
TMT_VERSION := 1.78.0
TMT := $(VENV)-tmt/bin/tmt
EXAMPLE := examples/debian-bookworm-minimal/image.yaml
# `make test` runs the tests on this many processes (pytest-xdist; 0: in this one process)
TEST_WORKERS ?= 4
# The tests' temporary directories, and so every home they make, live under a path such as users' homes
# have: a dot-directory, capitals, spaces, and deep enough that a socket's path would not fit in an
# address. pytest empties it at the start of each run; a passing test's directories go when it ends.
# Everything the tests write (TEST_TMP, and TMPDIR for the rest) is under TEST_ROOT: as root, an ext4 of its own
# in the sparse file TEST_ROOT.img of at most TEST_ROOT_SIZE (TEST_ROOT_FS: ext4, dir, or auto: ext4 as root);
# scripts/test-root.sh says why.
TEST_ROOT ?= /tmp/imageci-tests
TEST_TMP ?= $(TEST_ROOT)/.Local Share/Imageci Test Homes Under A Long Path
TEST_ROOT_FS ?= auto
TEST_ROOT_SIZE ?= 64G

.PHONY: setup host-setup test-host-setup venv bytecode run test unit lint bench clean

setup: host-setup venv

host-setup:
	scripts/host-setup.sh

test-host-setup:
	scripts/host-setup.sh --test

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

## build → testing → tests in fresh sandboxes → gate → stable, on embedded defaults
run: setup
	@rc=0; $(BIN)/imageci pipeline $(EXAMPLE) --junit out/junit.xml --tap out/results.tap || rc=$$?; \
	$(BIN)/imageci images; \
	echo "Look at the results in a browser: $(BIN)/imageci dashboard   (then open the URL it prints)"; \
	exit $$rc

out:
	mkdir -p out

run: | out

# every module compiled now: with PYTHONDONTWRITEBYTECODE set (as on some CI machines, and here) each imageci
# process the tests and benchmarks start would otherwise compile the modules it imports again (the benchmarks
# would time the compiler: 20-60 ms of a quick command)
bytecode: venv
	$(BIN)/python -m compileall -q src tests bench >/dev/null

## unit + integration tests with the real tools (mmdebstrap, bwrap, overlayfs, PostgreSQL); as root
test: test-host-setup venv bytecode $(TMT)
	# what an earlier run left (a mount pytest cannot remove would stop this one): unmounted and removed
	scripts/test-root.sh "$(TEST_ROOT)" $(TEST_ROOT_FS) $(TEST_ROOT_SIZE)
	mkdir -p "$$(dirname "$(TEST_TMP)")" "$(TEST_ROOT)/tmp"
	TMPDIR="$(TEST_ROOT)/tmp" $(BIN)/python -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadgroup \
		--no-loadscope-reorder --basetemp "$(TEST_TMP)" $(PYTEST_ARGS)

## the tests that need no root (pure logic, catalog, CLI parsing, formats), as any user
unit: venv
	mkdir -p "$$(dirname "$(TEST_TMP)")"
	$(BIN)/python -m pytest -q -m "not root" -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --basetemp "$(TEST_TMP)" \
		$(PYTEST_ARGS)

$(TMT):
	test -x $(VENV)-tmt/bin/python || $(PYTHON) -m venv $(VENV)-tmt
	$(VENV)-tmt/bin/pip install -q "tmt==$(TMT_VERSION)"

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	# the benchmarks too (strict, as the package): a refactor that breaks one fails here, not in `make bench`
	cd bench && MYPYPATH=../src:../tests ../$(BIN)/mypy --config-file ../pyproject.toml --explicit-package-bases *.py

bench: setup bytecode $(TMT)
	$(BIN)/python bench/sandbox_overhead.py
	$(BIN)/python bench/disk_slots.py
	$(BIN)/python bench/one_test.py
	$(BIN)/python bench/build_overhead.py
	$(BIN)/python bench/qemu_boot.py
	$(BIN)/python bench/cloud_boot.py
	$(BIN)/python bench/dep8_vs_autopkgtest.py
	$(BIN)/python bench/dep8_vs_autopkgtest.py --builddeps
	$(BIN)/python bench/queries_at_scale.py
	$(BIN)/python bench/server_api.py
	$(BIN)/python bench/import_vs_umoci.py
	$(BIN)/python bench/feed_at_scale.py
	$(BIN)/python bench/object_store.py
	$(BIN)/python bench/replicas_ingest.py
	$(BIN)/python bench/retention_at_scale.py
	$(BIN)/python bench/lxd_fresh_instance.py
	$(BIN)/python bench/structure_vs_cst.py
	$(BIN)/python bench/celery_fanout.py
	$(BIN)/python bench/dashboard_at_scale.py
	$(BIN)/python bench/bom_vs_syft.py
	$(BIN)/python bench/vulns_at_scale.py
	$(BIN)/python bench/bisect_corpus.py
	$(BIN)/python bench/debugging.py
	IMAGECI_TMT=$(TMT) $(BIN)/python bench/podman_vs_tmt.py

clean:
	rm -rf $(VENV) $(VENV)-tmt out .pytest_cache .mypy_cache .ruff_cache
