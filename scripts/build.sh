#!/usr/bin/env bash
# Configures and builds loopus (Release) into ./build; extra args go to cmake --build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" "$@"
