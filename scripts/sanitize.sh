#!/bin/sh
# Builds the suite with AddressSanitizer + UndefinedBehaviorSanitizer in
# build-asan/ and runs every test under them (several minutes on 2 cores).
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -DRWKV_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build-asan -j2
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build-asan --output-on-failure -j2
