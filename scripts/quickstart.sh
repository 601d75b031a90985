#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, then run the demo
# (a real VM from the embedded `tiny` image: create, wait ready, exec, copy in and out, delete).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node dist/cli/main.js demo
