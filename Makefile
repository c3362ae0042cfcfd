# SPDX-License-Identifier: MIT
# Convenience front end over CMake.  Quick start on a fresh Debian 12 (root):
#     make demo    installs build dependencies, builds, runs the demo tour
#     make test    installs dependencies, builds and runs every test three
#                  times: plain (gcc), AddressSanitizer+UBSan, ThreadSanitizer;
#                  and builds everything with clang -Werror and runs the
#                  unit tests there too; and builds the portable library
#                  (CF_PORTABLE: POSIX interfaces only) and runs the unit
#                  tests on it
# Other targets: build, bench, bench-plot, clean; install and install-strip
# (PREFIX=/usr/local) build and install the library alone, which needs only
# a C compiler and CMake.

JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX   ?= /usr/local
CMAKE    ?= cmake
CTEST    ?= ctest
CTEST_ARGS ?= --output-on-failure -j $(JOBS)

# Debian packages.  Building and installing the library needs only
# BUILD_DEBS; the tests, examples, demo, benchmarks and the reference-page
# generator use DEV_DEBS too.
BUILD_DEBS := build-essential cmake
DEV_DEBS   := clang pkg-config libcmocka-dev libgmp-dev libsqlite3-dev \
              libssl-dev libcurl4-openssl-dev libuv1-dev libglib2.0-dev libtbb-dev gnuplot-nox \
              python3 gdb valgrind libopenmpi-dev openmpi-bin python3-mpi4py
DEBS       := $(BUILD_DEBS) $(DEV_DEBS)
# Only the MPI engine's second-host tests (tests/mpi/two_hosts.sh) use
# these: a lossy link (nft) and ssh as Open MPI's launcher, with an sshd
# of the test's own.  openssh-server enables the system's ssh service
# where systemd runs, so only the test targets install them.
TEST_DEBS  := nftables openssh-client openssh-server

# The developer/CI configuration: warnings are errors.
DEV_FLAGS := -DCF_WERROR=ON

.PHONY: all deps deps-build deps-test build demo test test-plain test-clang test-asan test-tsan test-portable \
        bench bench-plot \
        fuzz configure-release install install-strip clean

all: build

# apt-installs whichever of the packages in $(1) are missing; needs root (or
# sudo) on a bare machine.
define install_debs
@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call install_debs,$(DEBS))

deps-build:
	$(call install_debs,$(BUILD_DEBS))

deps-test: deps
	$(call install_debs,$(TEST_DEBS))

build/CMakeCache.txt:
	$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps build/CMakeCache.txt
	$(CMAKE) --build build -j $(JOBS)

demo: build
	./build/examples/demo

test-plain: deps-test
	$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo $(DEV_FLAGS)
	$(CMAKE) --build build -j $(JOBS)
	cd build && $(CTEST) $(CTEST_ARGS)

# The same code must build warning-free with clang, and pass there too.
test-clang: deps-test
	CC=clang $(CMAKE) -S . -B build-clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCF_BUILD_BENCH=OFF $(DEV_FLAGS)
	$(CMAKE) --build build-clang -j $(JOBS)
	cd build-clang && $(CTEST) $(CTEST_ARGS) -L unit

# The portable build (POSIX interfaces only, no Linux system calls): gcc,
# no sanitizer, the unit tests (those of what only Linux has are skipped).
# It also keeps the thread-locals in the default TLS model, so that
# CF_INITIAL_EXEC_TLS=OFF is built and tested.
test-portable: deps
	$(CMAKE) -S . -B build-portable -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCF_PORTABLE=ON \
	  -DCF_INITIAL_EXEC_TLS=OFF -DCF_BUILD_BENCH=OFF -DCF_BUILD_EXAMPLES=OFF $(DEV_FLAGS)
	$(CMAKE) --build build-portable -j $(JOBS)
	cd build-portable && $(CTEST) $(CTEST_ARGS) -L unit -LE mpi

# Sanitizer builds: tests and examples only (no benchmarks), longer watchdog.
test-asan: deps-test
	$(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCF_SANITIZE=address,undefined -DCF_BUILD_BENCH=OFF $(DEV_FLAGS)
	$(CMAKE) --build build-asan -j $(JOBS)
	cd build-asan && CF_TEST_TIMEOUT_SCALE=3 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(CTEST) $(CTEST_ARGS)

test-tsan: deps
	$(CMAKE) -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DCF_SANITIZE=thread -DCF_BUILD_BENCH=OFF $(DEV_FLAGS)
	$(CMAKE) --build build-tsan -j $(JOBS)
	cd build-tsan && CF_TEST_TIMEOUT_SCALE=5 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  $(CTEST) $(CTEST_ARGS)

test: test-plain test-clang test-asan test-tsan test-portable
	@echo "all test builds passed (gcc, clang, asan+ubsan, tsan, portable)"

bench: build
	./build/bench/bench_thread
	./build/bench/bench_process
	./build/bench/bench_compose

# Per-task cost against tasks in flight for the thread pool and its peers:
# build/sweep.dat and build/sweep.png (bench/README.md shows one).
bench-plot: build
	./build/bench/bench_thread --sweep build/sweep.dat -r 3
	gnuplot -e "datafile='build/sweep.dat'; outfile='build/sweep.png'" bench/plot_sweep.gp

# Longer runs of the fuzz targets than the 20 s each `make test` gives them
# (clang, libFuzzer), one after the other; new inputs stay in
# build-clang/fuzz/.  make fuzz FUZZ_SECONDS=N (per target)
FUZZ_SECONDS ?= 300
FUZZ_TARGETS := frame_reader mpi_messages
fuzz: deps
	CC=clang $(CMAKE) -S . -B build-clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCF_BUILD_BENCH=OFF $(DEV_FLAGS)
	$(CMAKE) --build build-clang -j $(JOBS) --target $(addprefix fuzz_,$(FUZZ_TARGETS))
	cd build-clang/fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus-$$t && \
	  ./fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    corpus-$$t ../../fuzz/corpus/$$t || exit 1; done

# The library alone, in a tree of its own: no test toolchain needed.
# Configured (again) for PREFIX each time, so that the paths compiled in
# (cfutures-worker's, for a static copy of the library) are the ones the
# files go to.
configure-release:
	$(CMAKE) -S . -B build-release -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_INSTALL_PREFIX=$(PREFIX) \
	  -DCF_BUILD_TESTS=OFF -DCF_BUILD_EXAMPLES=OFF -DCF_BUILD_BENCH=OFF

install: deps-build configure-release
	$(CMAKE) --build build-release -j $(JOBS)
	$(CMAKE) --install build-release

install-strip: deps-build configure-release
	$(CMAKE) --build build-release -j $(JOBS)
	$(CMAKE) --install build-release --strip

clean:
	rm -rf build build-clang build-asan build-tsan build-portable build-release
