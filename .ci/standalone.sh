#!/usr/bin/env bash
# Fails if a tracked file names a path outside the repository: a sibling folder (the
# shared one beside the checkout) or an absolute home or work path of one machine. A user
# clones the repository alone, so nothing may read from beside or above it.
set -euo pipefail
cd "$(dirname "$0")/.."
# Assembled from pieces so that this file does not match itself.
up='\.\.'
pattern="${up}/shared|/wo""rk/|/ro""ot/|/home/[a-z]"
if hits=$(git grep -n -I -E "$pattern" -- . ':!Cargo.lock'); then
  echo "error: tracked files name paths outside the repository:" >&2
  echo "$hits" | head -40 >&2
  exit 1
fi
echo "ok: no tracked file names a path outside the repository"
