#!/usr/bin/env bash
# The test command: installs dependencies, builds everything, fetches the real models the tests
# need (scripts/get_models.sh: SmolLM2-135M into ${LOOPUS_MODELS_DIR:-$HOME/.cache/loopus/models};
# LOOPUS_OFFLINE=1 fetches nothing and those tests report as skipped), runs the whole suite with ctest.
# Data comes from ../shared/data (override with LOOPUS_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
bash scripts/get_models.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
