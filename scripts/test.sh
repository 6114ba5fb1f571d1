#!/usr/bin/env bash
# The test command: installs dependencies, builds everything, runs the whole suite with ctest.
# Data comes from ../shared/data (override with LOOPUS_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
