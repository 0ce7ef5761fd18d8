#!/usr/bin/env bash
# Sets everything up, then runs the gateway (embedded default: the libvirt
# test driver on http://127.0.0.1:4000/graphql). Arguments go to the gateway,
# for example: --config gateway.yaml
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec node_modules/.bin/tsx src/main.ts "$@"
