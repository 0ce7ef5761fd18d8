#!/usr/bin/env bash
# Sets everything up, builds dist/, then runs the gateway. Arguments go to the
# gateway (the virt-graph command), for example: --config gateway.yaml.
# Without a configuration it serves the embedded default: libvirt's test
# driver and VMware's vCenter simulator, which this script starts on
# 127.0.0.1:8989 and which exits with the gateway.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

if [ "$#" -eq 0 ] && [ -z "${VIRT_GRAPH_CONFIG:-}" ]; then
  mkdir -p .cache/vcsim
  rm -f .cache/vcsim/ready
  # Its TLS key and certificate (ECDSA P-256) are kept in key.pem, so the
  # certificate in cert.pem, which the embedded default trusts, stays the same
  # from one run to the next for clients that pin it.
  .cache/bin/vcsim-fixture -listen 127.0.0.1:8989 -username user -password pass \
    -cert .cache/vcsim/cert.pem -key .cache/vcsim/key.pem -exit-with $$ -exit-on-stdin-close=false \
    -dc 1 -cluster 1 -cluster-host 3 -host 1 -vm 2 -ds 2 -pg 2 \
    > .cache/vcsim/ready 2> .cache/vcsim/vcsim.log < /dev/null &
  for _ in $(seq 1 100); do
    [ -s .cache/vcsim/ready ] && break
    kill -0 $! 2>/dev/null || break
    sleep 0.1
  done
  if [ -s .cache/vcsim/ready ]; then
    echo "[run-gateway] vCenter simulator on https://127.0.0.1:8989/sdk" >&2
  else
    echo "[run-gateway] the vCenter simulator did not start (see .cache/vcsim/vcsim.log); its platform will show as UNREACHABLE" >&2
  fi
fi

# The gateway runs compiled (dist/), as in production: built when any of its
# sources is newer than the last build. The build's output goes to stderr, so
# stdout carries the JSON log stream alone.
if [ ! -f dist/main.js ] ||
  [ -n "$(find src schema codegen.ts package.json tsconfig.json tsconfig.build.json -newer dist/main.js -print -quit)" ]; then
  echo "[run-gateway] compiling TypeScript to dist/ (npm run build)" >&2
  npm run --silent build >&2
fi

# exec keeps this PID, so the simulator (-exit-with) stops with the gateway,
# and the gateway gets a signal sent to it once (no npm or tsx in between to
# pass it on again). In production mode unless told otherwise.
export NODE_ENV="${NODE_ENV:-production}"
exec node dist/main.js "$@"
