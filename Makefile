# The single entry point. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WHEELHOUSE := .wheelhouse
SAMPLES := .samples
STAMP := $(VENV)/.detpack-setup

MACHINES := .machines
#: The zlib-ng package detpack pins (pyproject.toml): its sdist's C sources give a compat libz.so.1.
ZLIB_NG := zlib-ng==1.1.0
#: Debian's arm64 CPython 3.11 and what it links: a sysroot for qemu-aarch64-static.
ARM64_DEBS := python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 zlib1g libexpat1 \
	libffi8 libssl3 libbz2-1.0 liblzma5 libzstd1 libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 \
	libcrypt1 libnsl2 libtirpc3 libgssapi-krb5-2

.PHONY: setup demo test test-network test-corpus corpus-raw rebuild-corpus test-fast lint typecheck bench fuzz clean machines

setup: $(STAMP)

$(STAMP): pyproject.toml fixtures/wheelhouse.txt fixtures/wheelhouse-extra.txt fixtures/samples.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps -d $(WHEELHOUSE) -r fixtures/wheelhouse.txt
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps -d $(WHEELHOUSE) -r fixtures/wheelhouse-extra.txt
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps -d $(SAMPLES) -r fixtures/samples.txt
	touch $(STAMP)

# detpack's own output says where the outputs and their provenance are.
demo: setup
	$(BIN)/detpack build example -o example/dist --find-links $(WHEELHOUSE) --offline

test: setup
	$(BIN)/python -m pytest -m "not network"

test-network: setup
	$(BIN)/python -m pytest -m network

# The corpus (network): real PyPI projects of every backend (corpus/projects.txt), each built twice
# under every variation by `detpack check`; fails when a project in corpus/expected.json is no
# longer reproducible. corpus-raw checks `python -m build` the same way (slow: about a minute a
# project); rebuild-corpus runs `detpack rebuild --pypi -r` over corpus/releases.txt.
CORPUS_OUT ?= /tmp/detpack-corpus-results
test-corpus: setup
	$(BIN)/python corpus/run.py --skip-raw --jobs 2 --out $(CORPUS_OUT) --expect corpus/expected.json

corpus-raw: setup
	$(BIN)/python corpus/run.py --skip-detpack --jobs 2

rebuild-corpus: setup
	$(BIN)/detpack rebuild --pypi -r corpus/releases.txt --jobs 2

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not network"

lint: setup
	$(BIN)/ruff check detpack tests bench fuzz
	$(BIN)/ruff format --check detpack tests bench fuzz

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/run.py
	$(BIN)/python bench/store_scale.py

FUZZ_SECONDS ?= 300
fuzz: setup
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)

# "Another machine" for tests/test_machines.py: zlib-ng's libz.so.1 (compat mode) built from the
# pinned sdist, and an arm64 sysroot with the aarch64 wheels detpack.archive needs. Needs cmake, a C
# compiler and `dpkg --add-architecture arm64 && apt-get update` (.ci/run does all three).
machines: setup
	rm -rf $(MACHINES) && mkdir -p $(MACHINES)/src $(MACHINES)/debs $(MACHINES)/arm64-root $(MACHINES)/arm64-wheels
	$(BIN)/python -m pip download --quiet --no-binary=:all: --no-deps -d $(MACHINES)/src '$(ZLIB_NG)'
	tar -xzf $(MACHINES)/src/zlib_ng-*.tar.gz -C $(MACHINES)/src
	cmake -S $(MACHINES)/src/zlib_ng-*/src/zlib_ng/zlib-ng -B $(MACHINES)/zlib-ng-build -DZLIB_COMPAT=ON \
		-DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DZLIB_ENABLE_TESTS=OFF -DWITH_GTEST=OFF >/dev/null
	cmake --build $(MACHINES)/zlib-ng-build -j >/dev/null
	mkdir -p $(MACHINES)/zlib-ng-compat && cp -L $(MACHINES)/zlib-ng-build/libz.so.1 $(MACHINES)/zlib-ng-compat/
	cd $(MACHINES)/debs && apt-get download $(addsuffix :arm64,$(ARM64_DEBS)) >/dev/null
	for deb in $(MACHINES)/debs/*.deb; do dpkg-deb -x $$deb $(MACHINES)/arm64-root; done
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps --platform manylinux2014_aarch64 \
		--python-version 3.11 -d $(MACHINES)/arm64-wheels '$(ZLIB_NG)' rfc8785
	for whl in $(MACHINES)/arm64-wheels/*.whl; do $(BIN)/python -m zipfile -e $$whl $(MACHINES)/arm64-site; done

clean:
	rm -rf $(VENV) $(WHEELHOUSE) $(SAMPLES) $(MACHINES) example/dist .pytest_cache .mypy_cache .ruff_cache
