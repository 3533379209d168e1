#!/usr/bin/env bash
# The README's test command: installs missing Debian packages (as root), builds sd3q in build/, runs the test suite.
# Usage: scripts/test.sh [ctest arguments...]   (default: every test labelled "fast")
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
if [ $# -eq 0 ]; then set -- -L fast; fi
ctest --test-dir build --output-on-failure -j"$jobs" "$@"
