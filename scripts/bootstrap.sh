#!/usr/bin/env bash
# Installs what loopus needs to build, from Debian's packages (only the missing ones); extra package
# names as arguments (e.g. the sanitizer scripts' compiler).
set -euo pipefail
pkgs=(cmake g++ make pkg-config libeigen3-dev doctest-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libbz2-dev libopenblas-dev "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
