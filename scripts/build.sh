#!/usr/bin/env bash
# Configures and builds loopus (Release) into ./build; extra args go to cmake --build. The tests and the
# CLI compile as unity groups (LOOPUS_UNITY_BUILD, see CMakeLists.txt): about half the build time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLOOPUS_UNITY_BUILD=ON >/dev/null
cmake --build build -j"$(nproc)" "$@"
