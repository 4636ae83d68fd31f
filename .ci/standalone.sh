#!/usr/bin/env bash
# Fails if a tracked file names a path outside the repository: a sibling folder
# (`../shared`) or an absolute home or work path of one machine. A user clones the
# repository alone, so nothing may read from beside or above it.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='\.\./shared|/work/|/root/|/home/[a-z]'
# This script and its caller name the pattern itself.
if hits=$(git grep -n -I -E "$pattern" -- . ':!.ci/standalone.sh' ':!Cargo.lock'); then
  echo "error: tracked files name paths outside the repository:" >&2
  echo "$hits" | head -40 >&2
  exit 1
fi
echo "ok: no tracked file names a path outside the repository"
