#!/usr/bin/env bash
# The build stage of the Dockerfile. The Dockerfile runs this script and
# nothing else in its build stage, so running it in a clean directory
# (deploy/check-dockerfile.sh does) checks the image's build without a
# container engine.
#
#   deploy/build.sh deps   Debian build packages (only those missing; needs root)
#                          and the npm dependencies (npm ci)
#   deploy/build.sh app    the native libvirt addon (npm run build:native),
#                          the resolver types and TypeScript to dist/ (npm run
#                          build), then npm prune --omit=dev and a check that
#                          the pruned tree starts the CLI
#   deploy/build.sh        both
#
# The Dockerfile runs `deps` with only package.json, package-lock.json and
# this script copied in (that layer is reused while the lock file stays the
# same), then `app` with the whole build context.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[build] %s\n' "$*" >&2; }

# What node-gyp needs to compile the addon against libvirt: its headers and
# pkg-config file (libvirt-dev), a C++ toolchain, make and Python.
BUILD_PACKAGES=(libvirt-dev pkg-config g++ make python3)
ADDON=native/libvirt/build/Release/virt_graph_libvirt.node

deps() {
  local missing=() pkg
  for pkg in "${BUILD_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      log "missing Debian packages: ${missing[*]} (installing them needs root)"
      exit 1
    fi
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "Debian packages present: ${BUILD_PACKAGES[*]}"
  fi
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
}

app() {
  # Node's official images carry Node's headers (include/node) beside the
  # binary: point node-gyp at them rather than have it download them.
  if [ -z "${npm_config_nodedir:-}" ] && [ "$(npm config get nodedir)" = "undefined" ]; then
    local prefix
    prefix=$(node -p 'require("node:path").resolve(process.execPath, "../..")')
    if [ -f "$prefix/include/node/common.gypi" ]; then
      export npm_config_nodedir="$prefix"
    fi
  fi
  log "building the native libvirt addon"
  npm run --silent build:native >/dev/null
  if ! node -e 'process.exit(require("./package.json").scripts?.build ? 0 : 1)'; then
    log 'package.json has no "build" script (TypeScript to dist/)'
    exit 1
  fi
  log "npm run build: the resolver types, then TypeScript to dist/"
  npm run --silent build
  [ -f dist/main.js ] || {
    log "npm run build made no dist/main.js"
    exit 1
  }
  [ -f "$ADDON" ] || {
    log "no addon at $ADDON"
    exit 1
  }
  log "npm prune --omit=dev"
  npm prune --omit=dev --no-audit --no-fund --loglevel=error
  # Every module the CLI imports is resolved before it prints its help, so
  # this proves the pruned tree (production dependencies only) starts it.
  node dist/main.js --help >/dev/null
  node -e "require('./$ADDON')"
  log "built: dist/ ($(find dist -name '*.js' | wc -l) files), $ADDON"
}

case "${1:-all}" in
  deps) deps ;;
  app) app ;;
  all)
    deps
    app
    ;;
  *)
    echo "usage: $0 [deps|app]" >&2
    exit 2
    ;;
esac
