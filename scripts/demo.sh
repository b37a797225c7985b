#!/usr/bin/env bash
# The demo: installs what is needed, builds, and boots a real nspawn container under the man8s init.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$PATH"
exec bun test/demo.ts
