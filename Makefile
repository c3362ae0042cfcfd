# Convenience front end over CMake.  Quick start on a fresh Debian 12 (root):
#     make demo    installs build dependencies, builds, runs the demo tour
#     make test    installs dependencies, builds and runs every test three
#                  times: plain (gcc), AddressSanitizer+UBSan, ThreadSanitizer;
#                  and builds everything with clang -Werror and runs the
#                  unit tests there too
# Other targets: build, bench, install (PREFIX=/usr/local), clean.

JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX   ?= /usr/local
CMAKE    ?= cmake
CTEST    ?= ctest
CTEST_ARGS ?= --output-on-failure -j $(JOBS)

# Debian packages the build, tests, examples, demo and benchmarks use.
DEBS := build-essential clang cmake pkg-config libcmocka-dev libgmp-dev \
        libsqlite3-dev libssl-dev python3 gdb valgrind

.PHONY: all deps build demo test test-plain test-clang test-asan test-tsan bench install clean

all: build

# Installs only what is missing; needs root (or sudo) on a bare machine.
deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build/CMakeCache.txt:
	$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps build/CMakeCache.txt
	$(CMAKE) --build build -j $(JOBS)

demo: build
	./build/examples/demo

test-plain: deps
	$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
	$(CMAKE) --build build -j $(JOBS)
	cd build && $(CTEST) $(CTEST_ARGS)

# The same code must build warning-free with clang, and pass there too.
test-clang: deps
	CC=clang $(CMAKE) -S . -B build-clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCF_BUILD_BENCH=OFF
	$(CMAKE) --build build-clang -j $(JOBS)
	cd build-clang && $(CTEST) $(CTEST_ARGS) -L unit

# Sanitizer builds: tests and examples only (no benchmarks), longer watchdog.
test-asan: deps
	$(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCF_SANITIZE=address,undefined -DCF_BUILD_BENCH=OFF
	$(CMAKE) --build build-asan -j $(JOBS)
	cd build-asan && CF_TEST_TIMEOUT_SCALE=3 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(CTEST) $(CTEST_ARGS)

test-tsan: deps
	$(CMAKE) -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DCF_SANITIZE=thread -DCF_BUILD_BENCH=OFF
	$(CMAKE) --build build-tsan -j $(JOBS)
	cd build-tsan && CF_TEST_TIMEOUT_SCALE=5 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  $(CTEST) $(CTEST_ARGS)

test: test-plain test-clang test-asan test-tsan
	@echo "all test builds passed (gcc, clang, asan+ubsan, tsan)"

bench: build
	./build/bench/bench_thread
	./build/bench/bench_process

install: build
	$(CMAKE) --install build --prefix $(PREFIX)

clean:
	rm -rf build build-clang build-asan build-tsan
