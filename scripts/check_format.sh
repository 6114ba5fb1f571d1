#!/usr/bin/env bash
# Checks that the C++ lines a change touches follow .clang-format; code the change did not touch is not
# judged (the existing code is not reformatted wholesale).
#
#   scripts/check_format.sh [BASE]
#
# Compares the working tree (committed, staged and unstaged edits; not untracked files) with BASE:
#   BASE given        that commit / branch / tag
#   otherwise         the merge-base with origin/main, else with a local main branch,
#                     else HEAD~1 (the last commit alone)
# Prints the formatting clang-format wants as a unified diff and exits 1 when there is one; exits 0 when
# the touched lines are formatted. Needs clang-format 14 and its clang-format-diff (Debian: clang-format-14).
# To apply the fixes instead: git diff -U0 --no-color BASE | clang-format-diff-14 -p1 -i
set -euo pipefail
cd "$(dirname "$0")/.."

find_tool() {
  local c
  for c in "$@"; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
    if [ -f "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}
CF=$(find_tool clang-format-14 clang-format) || { echo "check_format: clang-format not found" >&2; exit 2; }
CFD=$(find_tool clang-format-diff-14 clang-format-diff /usr/share/clang/clang-format-14/clang-format-diff.py) ||
  { echo "check_format: clang-format-diff not found (apt-get install clang-format-14)" >&2; exit 2; }

if [ $# -ge 1 ]; then
  base=$1
elif git rev-parse -q --verify origin/main >/dev/null; then
  base=$(git merge-base HEAD origin/main)
elif git rev-parse -q --verify main >/dev/null && [ "$(git rev-parse main)" != "$(git rev-parse HEAD)" ]; then
  base=$(git merge-base HEAD main)
else
  base=HEAD~1
fi
git rev-parse -q --verify "$base^{commit}" >/dev/null || { echo "check_format: unknown base '$base'" >&2; exit 2; }

# -U0: only the changed lines; clang-format-diff formats those line ranges of each changed C/C++ file.
out=$(git diff -U0 --no-color "$base" -- '*.hpp' '*.cpp' '*.h' '*.cc' |
  python3 "$CFD" -p1 -binary "$CF" -regex '.*\.(hpp|cpp|h|cc)')
if [ -n "$out" ]; then
  printf '%s\n' "$out"
  echo "check_format: the lines above (changed since $(git rev-parse --short "$base")) need formatting" >&2
  exit 1
fi
echo "check_format: changed lines since $(git rev-parse --short "$base") are formatted"
