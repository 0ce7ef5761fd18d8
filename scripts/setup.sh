#!/usr/bin/env bash
# Installs everything the gateway and its tests need on Debian 12 with
# Node.js 20: Debian packages, npm dependencies, the native libvirt addon and
# the generated resolver types. Safe to run again: each step is skipped when
# its result is already in place and up to date.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  log "Node.js 20 or newer is required (found: $(node --version 2>/dev/null || echo none))."
  exit 1
fi

# Debian packages: libvirt headers and library (the test driver is built in),
# libvirtd (the tests serve the test driver through it to cut connections),
# the toolchain node-gyp needs for the addon, and Go with VMware's govmomi
# sources for the vCenter simulator (vcsim), built offline from them.
APT_PACKAGES=(libvirt-dev libvirt-daemon pkg-config g++ make python3 golang-go golang-github-vmware-govmomi-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm dependencies, when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

# The native addon, when any of its sources is newer than the build.
addon=native/libvirt/build/Release/virt_graph_libvirt.node
if [ ! -f "$addon" ] || [ -n "$(find native/libvirt/src native/libvirt/binding.gyp -newer "$addon" -print -quit)" ]; then
  log "building the native libvirt addon"
  npm run --silent build:native >/dev/null
fi

# Resolver types generated from the schema (the contract).
if [ ! -f src/generated/graphql.ts ] || [ -n "$(find schema codegen.ts -newer src/generated/graphql.ts -print -quit)" ]; then
  log "generating resolver types from schema/"
  npm run --silent codegen >/dev/null
fi

# The vCenter simulator (VMware's govmomi/simulator) used by the tests and by
# the embedded default, built from Debian's govmomi sources without network.
vcsim=.cache/bin/vcsim-fixture
if [ ! -x "$vcsim" ] || [ -n "$(find test/fixtures/vcsim -newer "$vcsim" -print -quit)" ]; then
  log "building the vCenter simulator"
  mkdir -p .cache/bin .cache/go-build
  # GOPATH mode over Debian's sources: no module download, no user config.
  GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$PWD/.cache/go-build" GOENV=off GOPROXY=off \
    go build -o "$vcsim" ./test/fixtures/vcsim
fi

log "ready"
