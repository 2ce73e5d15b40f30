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

.PHONY: setup lock test-latest release demo test test-network test-corpus corpus-raw rebuild-corpus test-fast lint typecheck bench fuzz clean machines

#: detpack's own environment, locked (PEP 751, every file by sha256): what `make setup` installs, in
#: hash-checking mode, so a fresh clone gets today's tested versions next month too. `make lock`
#: re-resolves it on purpose (the newest releases pyproject.toml allows); `make test-latest` runs the
#: tests unlocked, on the newest releases, to see a breaking release before a lock refresh.
LOCK := pylock.dev.toml
#: pip and uv themselves, pinned with their hashes: what installs the lock.
BOOTSTRAP := requirements-bootstrap.txt
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-unknown-linux-gnu

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) $(BOOTSTRAP) fixtures/wheelhouse.txt fixtures/wheelhouse-extra.txt fixtures/samples.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(BOOTSTRAP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes -r $(LOCK)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps -d $(WHEELHOUSE) -r fixtures/wheelhouse.txt
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps -d $(WHEELHOUSE) -r fixtures/wheelhouse-extra.txt
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps -d $(SAMPLES) -r fixtures/samples.txt
	touch $(STAMP)

# Re-resolve detpack's own environment (the newest releases pyproject.toml allows), and pin the pip
# and uv that install it. Review the diff, run `make test`, commit both files.
lock:
	test -x $(BIN)/uv || $(MAKE) setup
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra postgresql $(LOCK_TARGET) --upgrade \
		--format pylock.toml --no-header --quiet -o $(LOCK)
	printf 'pip==%s\nuv==%s\n' "$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("pip"))')" \
		"$$(sed -n '/^name = "uv"$$/{n;s/version = "\(.*\)"/\1/p}' $(LOCK))" > $(BOOTSTRAP).in
	$(BIN)/uv pip compile $(BOOTSTRAP).in $(LOCK_TARGET) --generate-hashes --no-header --quiet -o $(BOOTSTRAP)
	sed -i 's|# via -r $(BOOTSTRAP).in|# via make lock|' $(BOOTSTRAP) && rm $(BOOTSTRAP).in

# The tests on the newest releases, unlocked, in an environment of their own (.venv-latest): a report
# to run before `make lock` (not in CI: about 13 minutes on 2 cores), so a breaking release is seen
# before the lock is refreshed.
# LATEST_MARKS picks the tests: by default every one that needs no network and is not slow.
LATEST := .venv-latest
LATEST_MARKS ?= not network and not slow
test-latest: setup
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet -e '.[dev]'
	$(LATEST)/bin/python -m pip list --format=freeze > $(LATEST)/versions.txt
	$(LATEST)/bin/python -m pytest -m "$(LATEST_MARKS)" -p no:cacheprovider

# detpack releases itself with detpack: its sdist and wheel built with the build dependencies locked in
# pylock.build.toml (by sha256), their provenance and SBOMs, `detpack check` (two builds under every
# variation, identical) and `detpack rebuild` of the record from this tree (the same bytes again).
RELEASE ?= dist
RELEASE_FLAGS ?=
release: setup
	rm -rf $(RELEASE) && mkdir -p $(RELEASE)
	$(BIN)/detpack build . -o $(RELEASE) --lock pylock.build.toml $(RELEASE_FLAGS)
	$(BIN)/detpack sbom $(RELEASE)/detpack-*.provenance.json
	$(BIN)/detpack check . --lock pylock.build.toml $(RELEASE_FLAGS)
	$(BIN)/detpack rebuild $(RELEASE)/detpack-*.provenance.json --source . $(RELEASE_FLAGS)

# detpack's own output says where the outputs and their provenance are.
demo: setup
	$(BIN)/detpack build example -o example/dist --find-links $(WHEELHOUSE) --offline

# --durations: the slowest tests, named in the log (CI's time is kept in check from there).
test: setup
	$(BIN)/python -m pytest -m "not network" --durations=25

test-network: setup
	$(BIN)/python -m pytest -m network

# The corpus (network): real PyPI projects of every backend (corpus/projects.txt), each built twice
# under every variation by `detpack check`; fails when a project in corpus/expected.json is no
# longer reproducible. corpus-raw checks `python -m build` the same way (slow: about a minute a
# project); rebuild-corpus runs `detpack rebuild --pypi -r` over corpus/releases.txt (chosen by
# backend), corpus/top100.txt (PyPI's 100 most downloaded projects) and corpus/sample100.txt (100
# drawn at random from download ranks 101..5000); corpus/pick.py regenerates the two from the
# ranking (hugovk/top-pypi-packages) and says how in their headers. REBUILD_LISTS picks the lists.
CORPUS_OUT ?= /tmp/detpack-corpus-results
test-corpus: setup
	$(BIN)/python corpus/run.py --skip-raw --jobs 2 --out $(CORPUS_OUT) --expect corpus/expected.json

corpus-raw: setup
	$(BIN)/python corpus/run.py --skip-detpack --jobs 2

REBUILD_LISTS ?= corpus/releases.txt corpus/top100.txt corpus/sample100.txt
REBUILD_TIMEOUT ?= 5m
rebuild-corpus: setup
	@status=0; for list in $(REBUILD_LISTS); do \
		echo "== $$list"; \
		$(BIN)/detpack rebuild --pypi -r $$list --jobs 2 --timeout $(REBUILD_TIMEOUT) || status=1; \
	done; exit $$status

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

# Toolchain images and another host (issue 36). Both are Debian roots made from scratch by
# tests/machines/debian-root (debootstrap --variant=minbase from $(DEBIAN_MIRROR), as root; the .debs
# are cached in $(DEBOOTSTRAP_CACHE), outside the checkout). Needs debootstrap and bubblewrap.
.PHONY: toolchain other-host
DEBIAN_MIRROR ?= http://deb.debian.org/debian
DEBOOTSTRAP_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/detpack-debootstrap
DEBIAN_ROOT := MIRROR=$(DEBIAN_MIRROR) DEBOOTSTRAP_CACHE=$(DEBOOTSTRAP_CACHE) tests/machines/debian-root

# A test toolchain image for `detpack build --toolchain`: Debian 12 (bookworm, CPython 3.11, gcc 12)
# as an OCI image at oci:.toolchain/debian12:1, packed by detpack itself (one layer,
# .toolchain/debian12-root.tar.gz, with its provenance). Removed from the root before packing (what
# an image must not carry; debian-root lists why): /dev nodes (console, full, null, ptmx, random,
# tty, urandom, zero; the fd/stdin/stdout/stderr links and pts, shm), /proc and /sys contents, apt's
# caches and lists, the logs, ldconfig's aux-cache, the machine-ids, dpkg's and debconf's *-old
# backups, and the build machine's hostname and resolv.conf (left empty). Nothing else is refused
# by detpack layer: its absolute symlinks resolve inside the image. The layer keeps no setuid bit,
# owner or special mode (every member root-owned, 0644/0755, so /tmp is 0755: a runtime mounts its
# own). Dates are TOOLCHAIN_EPOCH: the packages' scripts see it as SOURCE_DATE_EPOCH (/etc/shadow),
# and the layer and image are stamped with it; two runs on one day give the same layer digest
# (the mirror moves on between point releases). The root is not this checkout's source:
# GIT_CEILING_DIRECTORIES keeps detpack layer from recording this commit as its origin (and the image
# from carrying it as org.opencontainers.image.revision), so the image's digest does not change with
# every commit.
TOOLCHAIN := .toolchain
TOOLCHAIN_EPOCH := 1686355200
TOOLCHAIN_PACKAGES := python3 python3-venv python3-dev gcc libc6-dev patchelf
toolchain: setup
	rm -rf $(TOOLCHAIN) && mkdir -p $(TOOLCHAIN)
	SOURCE_DATE_EPOCH=$(TOOLCHAIN_EPOCH) $(DEBIAN_ROOT) bookworm $(TOOLCHAIN)/debian12-rootfs $(TOOLCHAIN_PACKAGES)
	# The layer gives every file the epoch's time, so bytecode that records its source's time is stale in the
	# image and every Python process compiles the stdlib again: make it hash-based, never checked (unchanged).
	bwrap --bind $(TOOLCHAIN)/debian12-rootfs / --dev /dev --proc /proc --clearenv --setenv PATH /usr/bin:/bin -- \
		python3 -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /usr/lib/python3.11 /usr/lib/python3/dist-packages
	GIT_CEILING_DIRECTORIES=$(CURDIR) $(BIN)/detpack layer -q -o $(TOOLCHAIN)/debian12-root.tar.gz \
		--add $(TOOLCHAIN)/debian12-rootfs:/ --source-date-epoch $(TOOLCHAIN_EPOCH)
	$(BIN)/detpack image -q -o oci:$(TOOLCHAIN)/debian12:1 --layer $(TOOLCHAIN)/debian12-root.tar.gz \
		--env PATH=/usr/local/bin:/usr/bin:/bin --source-date-epoch $(TOOLCHAIN_EPOCH)
	rm -rf $(TOOLCHAIN)/debian12-rootfs

# Another host for tests/test_toolchain_machines.py (tests/other_host.py enters it with bubblewrap):
# Debian 13 (trixie: CPython 3.13, gcc 14, glibc 2.41) at .machines/trixie-root, with detpack in a
# venv at /opt/detpack made by trixie's own python3: this checkout's wheel and its dependencies as
# cp313 wheels (the versions pylock.dev.toml pins), pip and uv from $(BOOTSTRAP) by hash; installed
# offline. Run it after `make machines`, which starts .machines/ over (.ci/run does).
OTHER_HOST := $(MACHINES)/trixie-root
OTHER_WHEELS := $(MACHINES)/trixie-wheels
OTHER_PACKAGES := python3 python3-venv gcc libc6-dev python3-dev bubblewrap ca-certificates
OTHER_TARGET := --only-binary=:all: --python-version 3.13 --platform manylinux_2_17_x86_64
#: The root, writable, with the wheels at /tmp/wheels and nothing of this machine's environment.
OTHER_HOST_RW = bwrap --bind $(OTHER_HOST) / --proc /proc --dev /dev --tmpfs /tmp --ro-bind $(OTHER_WHEELS) /tmp/wheels \
	--clearenv --setenv PATH /usr/bin:/bin --setenv HOME /tmp --setenv LANG C.UTF-8 --
other-host: setup
	rm -rf $(OTHER_HOST) $(OTHER_WHEELS) && mkdir -p $(OTHER_WHEELS)
	$(DEBIAN_ROOT) trixie $(OTHER_HOST) $(OTHER_PACKAGES)
	$(BIN)/python -m pip wheel --quiet --no-deps -w $(OTHER_WHEELS) .
	$(BIN)/python -c 'import tomllib; print(*("%s==%s" % (p["name"], p["version"]) \
		for p in tomllib.load(open("$(LOCK)", "rb"))["packages"]), sep="\n")' > $(OTHER_WHEELS)/constraints.txt
	$(BIN)/python -m pip download --quiet $(OTHER_TARGET) -d $(OTHER_WHEELS) -c $(OTHER_WHEELS)/constraints.txt \
		$(OTHER_WHEELS)/detpack-*.whl
	$(BIN)/python -m pip download --quiet $(OTHER_TARGET) --no-deps -d $(OTHER_WHEELS) --require-hashes -r $(BOOTSTRAP)
	cp $(BOOTSTRAP) $(OTHER_WHEELS)/bootstrap.txt
	$(OTHER_HOST_RW) python3 -m venv /opt/detpack
	$(OTHER_HOST_RW) /opt/detpack/bin/python -m pip install --quiet --no-index --find-links /tmp/wheels \
		--require-hashes --no-deps -r /tmp/wheels/bootstrap.txt
	$(OTHER_HOST_RW) /opt/detpack/bin/python -m pip install --quiet --no-index --find-links /tmp/wheels detpack
	$(OTHER_HOST_RW) /opt/detpack/bin/detpack --version

clean:
	rm -rf $(VENV) $(WHEELHOUSE) $(SAMPLES) $(MACHINES) $(TOOLCHAIN) example/dist .pytest_cache .mypy_cache .ruff_cache
