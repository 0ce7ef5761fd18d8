#!/usr/bin/env bash
# Checks the Dockerfile without a container engine, in a clean directory:
#
#  1. the build context: a fresh `git clone` of the repository plus the
#     working tree's uncommitted changes (--committed: the clone alone),
#     filtered by .dockerignore as `docker build` filters it;
#  2. the build stage, instruction by instruction: WORKDIR, ENV, COPY from
#     the context into an empty directory that stands for the stage's root,
#     and each RUN (deploy/build.sh) run there with sh -c, as Docker runs it;
#     then dist/main.js, the addon (.node) and `node dist/main.js --help`;
#  3. the runtime stage: its COPY --from=build into a second empty root; its
#     RUN (apt-get, useradd) is not run on this machine, but each Debian
#     package it installs must exist in this Debian's archive, and every
#     library the addon links must come from those packages, what they
#     depend on, or the C/C++ runtime every Node image has;
#  4. a smoke run of that root: the stage's ENTRYPOINT and CMD with its ENV,
#     as its USER (uid 10001, not root),
#     serving libvirt's test driver: /healthz, /readyz, a GraphQL query and a
#     mutation with an API token (its task and audit entry written to the
#     state volume), /metrics, the HEALTHCHECK command, then SIGTERM and exit 0.
#
# The build stage's apt step needs root and is skipped for packages already
# installed. Slow (npm ci, node-gyp, tsc: minutes); not part of the test
# suite (test/deploy.test.ts checks what is quick).
#
#   deploy/check-dockerfile.sh [--committed] [--keep] [REPO]
set -euo pipefail

committed=0
keep=0
repo=""
for arg in "$@"; do
  case "$arg" in
    --committed) committed=1 ;;
    --keep) keep=1 ;;
    -h | --help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
      exit 0
      ;;
    -*)
      echo "unknown option: $arg" >&2
      exit 2
      ;;
    *) repo="$arg" ;;
  esac
done
repo=$(cd "${repo:-$(dirname "${BASH_SOURCE[0]}")/..}" && git rev-parse --show-toplevel)

started=$(date +%s)
step_started=$started
log() { printf '\033[1m[check-dockerfile %4ss]\033[0m %s\n' "$(($(date +%s) - started))" "$*" >&2; }
fail() {
  log "FAILED: $*"
  exit 1
}
step() {
  local now
  now=$(date +%s)
  log "$* (previous step: $((now - step_started)) s)"
  step_started=$now
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/virt-graph-dockerfile.XXXXXX")
chmod 0755 "$tmp"
smoke_pid=""
cleanup() {
  if [ -n "$smoke_pid" ] && kill -0 "$smoke_pid" 2>/dev/null; then kill -KILL "$smoke_pid" 2>/dev/null || true; fi
  if [ "$keep" = 1 ]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

# 1. The build context.
step "cloning $repo into $tmp/clone"
git clone --quiet --no-hardlinks "$repo" "$tmp/clone"
if [ "$committed" = 0 ]; then
  overlay=0
  while IFS= read -r -d '' f; do
    if [ -e "$repo/$f" ] || [ -L "$repo/$f" ]; then
      mkdir -p "$tmp/clone/$(dirname "$f")"
      cp -a "$repo/$f" "$tmp/clone/$f"
    else
      rm -f "$tmp/clone/$f"
    fi
    overlay=$((overlay + 1))
  done < <(git -C "$repo" ls-files -z --modified --others --exclude-standard)
  log "overlaid $overlay uncommitted file(s) of the working tree"
fi
[ -f "$tmp/clone/Dockerfile" ] || fail "no Dockerfile in the build context"

excludes=()
if [ -f "$tmp/clone/.dockerignore" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%%#*}"
    line="$(echo "$line" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')"
    [ -n "$line" ] || continue
    case "$line" in
      '!'*) fail ".dockerignore: exceptions (!) are not supported by this check: $line" ;;
      '**/'*) excludes+=(--no-anchored "--exclude=${line#\*\*/}") ;;
      *)
        line="${line#/}"
        excludes+=(--anchored "--exclude=./${line%/}")
        ;;
    esac
  done <"$tmp/clone/.dockerignore"
fi
mkdir "$tmp/context"
tar -C "$tmp/clone" "${excludes[@]}" --exclude=./.git -cf - . | tar -C "$tmp/context" -xf -
log "build context: $(find "$tmp/context" -type f | wc -l) files after .dockerignore"

# The Dockerfile as instructions: continuation lines joined, comments
# dropped, one line each: stage index, stage name, instruction, arguments.
node - "$tmp/context/Dockerfile" >"$tmp/instructions.tsv" <<'EOF'
const text = require('node:fs').readFileSync(process.argv[2], 'utf8');
let stage = -1;
let name = '';
let pending = '';
for (const raw of text.split('\n')) {
  if (/^\s*#/.test(raw)) continue;
  const cont = /\\\s*$/.test(raw);
  pending += (pending ? ' ' : '') + raw.replace(/\\\s*$/, '').trim();
  if (cont) continue;
  const line = pending.trim();
  pending = '';
  if (!line) continue;
  const m = /^(\S+)\s*(.*)$/.exec(line);
  const instr = m[1].toUpperCase();
  const args = m[2];
  if (instr === 'FROM') {
    stage += 1;
    name = (/\sAS\s+(\S+)/i.exec(args) || [])[1] || String(stage);
  }
  console.log([stage, name, instr, args.replace(/\t/g, ' ')].join('\t'));
}
EOF

# Maps an absolute path inside a stage to the directory that stands for that stage's root.
inside() { printf '%s%s' "$1" "$2"; }

# COPY [--chown=..] [--chmod=..] [--link] [--from=STAGE] SRC... DEST, into stage root $1 with workdir $2.
copy() {
  local root="$1" wd="$2" args="$3" from="" words=() w
  read -r -a words <<<"$args"
  local srcs=()
  for w in "${words[@]}"; do
    case "$w" in
      --from=*) from="${w#--from=}" ;;
      --chown=* | --chmod=* | --link) ;;
      --*) fail "COPY option not supported by this check: $w" ;;
      *) srcs+=("$w") ;;
    esac
  done
  local dest="${srcs[-1]}"
  unset 'srcs[-1]'
  local srcroot="$tmp/context"
  if [ -n "$from" ]; then
    [ -n "${stage_root[$from]:-}" ] || fail "COPY --from=$from: no such stage"
    srcroot="${stage_root[$from]}"
  fi
  case "$dest" in
    /*) dest=$(inside "$root" "$dest") ;;
    *) dest="$wd/$dest" ;;
  esac
  local into_dir=0
  if [ "${#srcs[@]}" -gt 1 ] || [[ "$dest" == */ ]]; then into_dir=1; fi
  local s src
  for s in "${srcs[@]}"; do
    if [ -n "$from" ]; then src="$srcroot/${s#/}"; else src="$srcroot/$s"; fi
    [ -e "$src" ] || fail "COPY $args: $s is not in the ${from:-build context}"
    if [ -d "$src" ]; then
      mkdir -p "$dest"
      cp -a "$src/." "$dest/"
    elif [ "$into_dir" = 1 ]; then
      mkdir -p "$dest"
      cp -a "$src" "$dest/"
    else
      mkdir -p "$(dirname "$dest")"
      cp -a "$src" "$dest"
    fi
  done
}

declare -A stage_root
declare -A stage_wd
build_env=()
build_stage=""
runtime_stage=""
runtime_env=()
runtime_user=""
runtime_entrypoint="[]"
runtime_cmd="[]"
runtime_healthcheck=""
runtime_packages=()
runtime_volumes=()
current=""

while IFS=$'\t' read -r idx name instr args; do
  [ "$idx" -ge 0 ] || continue # ARG before the first FROM
  if [ "$instr" = FROM ]; then
    current="$name"
    stage_root[$current]="$tmp/stage-$current"
    stage_wd[$current]="$tmp/stage-$current"
    mkdir -p "${stage_root[$current]}"
    if [ -z "$build_stage" ]; then build_stage="$current"; else runtime_stage="$current"; fi
    step "stage $current: FROM $args"
    continue
  fi
  root="${stage_root[$current]}"
  if [ "$current" = "$build_stage" ]; then
    case "$instr" in
      ARG) ;;
      WORKDIR)
        stage_wd[$current]=$(inside "$root" "$args")
        mkdir -p "${stage_wd[$current]}"
        ;;
      ENV)
        while IFS= read -r kv; do [ -n "$kv" ] && build_env+=("$kv"); done < <(eval "printf '%s\n' $args")
        ;;
      COPY)
        log "COPY $args"
        copy "$root" "${stage_wd[$current]}" "$args"
        ;;
      RUN)
        step "RUN $args"
        # Docker's environment for RUN: the stage's ENV, PATH and HOME (kept, for npm's cache and settings).
        (cd "${stage_wd[$current]}" && env -i PATH="$PATH" HOME="$HOME" "${build_env[@]}" sh -c "$args") || fail "RUN $args"
        ;;
      *) fail "build stage instruction not supported by this check: $instr $args" ;;
    esac
  else
    case "$instr" in
      ARG) ;;
      WORKDIR)
        stage_wd[$current]=$(inside "$root" "$args")
        mkdir -p "${stage_wd[$current]}"
        runtime_workdir="$args"
        ;;
      ENV) runtime_env+=("$args") ;;
      COPY)
        log "COPY $args"
        copy "$root" "${stage_wd[$current]}" "$args"
        ;;
      RUN)
        log "RUN (not run on this machine: it needs the base image's root) $args"
        # The Debian packages it installs, for the checks below.
        # shellcheck disable=SC2207
        runtime_packages+=($(echo "$args" | grep -o 'apt-get install[^&;|]*' | sed 's/apt-get install//' | tr ' ' '\n' | grep -v '^-' | grep -v '^$' || true))
        ;;
      USER) runtime_user="$args" ;;
      ENTRYPOINT) runtime_entrypoint="$args" ;;
      CMD) runtime_cmd="$args" ;;
      HEALTHCHECK) runtime_healthcheck="$args" ;;
      VOLUME) runtime_volumes+=("$args") ;;
      EXPOSE | LABEL | STOPSIGNAL) ;;
      *) fail "runtime stage instruction not supported by this check: $instr $args" ;;
    esac
  fi
done <"$tmp/instructions.tsv"

# 2. What the build stage made.
build_wd="${stage_wd[$build_stage]}"
step "checking the build stage's result in $build_wd"
[ -f "$build_wd/dist/main.js" ] || fail "no dist/main.js"
addon_rel=native/libvirt/build/Release/virt_graph_libvirt.node
[ -f "$build_wd/$addon_rel" ] || fail "no $addon_rel"
(cd "$build_wd" && node dist/main.js --help >/dev/null) || fail "node dist/main.js --help"
log "dist/: $(find "$build_wd/dist" -name '*.js' | wc -l) .js files; addon: $(stat -c %s "$build_wd/$addon_rel") bytes; node dist/main.js --help: ok"
if [ -d "$build_wd/node_modules/typescript" ]; then
  fail "node_modules still holds development dependencies (typescript)"
fi

# 3. The runtime stage's files and packages.
[ -n "$runtime_stage" ] || fail "no runtime stage"
rt_root="${stage_root[$runtime_stage]}"
step "checking the runtime stage ($runtime_stage)"
[ "${#runtime_packages[@]}" -gt 0 ] || fail "the runtime stage installs no Debian package"
log "runtime Debian packages: ${runtime_packages[*]}"
allowed=(libc6 libstdc++6 libgcc-s1)
for pkg in "${runtime_packages[@]}"; do
  candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
  [ -n "$candidate" ] && [ "$candidate" != "(none)" ] || fail "Debian package $pkg is not in this machine's archive (apt-get update?)"
  # shellcheck disable=SC2207
  allowed+=($(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances "$pkg" 2>/dev/null | grep -v '^ ' | grep -v '^<' | sort -u))
done
rt_addon=$(find "$rt_root" -name virt_graph_libvirt.node -print -quit)
[ -n "$rt_addon" ] || fail "the runtime stage has no addon"
missing_libs=$(ldd "$rt_addon" | grep 'not found' || true)
[ -z "$missing_libs" ] || fail "the addon's libraries are not found: $missing_libs"
# The package that holds each library, asked of dpkg once (Debian 12
# registers some under /lib, some under /usr/lib: every spelling is asked).
declare -A owner
libs=$(ldd "$rt_addon" | awk '/=> \// { print $3 }')
paths=()
for lib in $libs; do
  for p in "$lib" "$(readlink -f "$lib")"; do paths+=("$p" "${p#/usr}" "/usr${p#/usr}"); done
done
while IFS= read -r line; do
  owner["${line#*: }"]="${line%%:*}"
done < <(dpkg -S "${paths[@]}" 2>/dev/null | grep -v '^diversion' || true)
for lib in $libs; do
  found=""
  for p in "$lib" "$(readlink -f "$lib")"; do
    for c in "$p" "${p#/usr}" "/usr${p#/usr}"; do found="${found:-${owner[$c]:-}}"; done
  done
  printf '%s\n' "${allowed[@]}" | grep -qx "$found" ||
    fail "the addon links $lib from package '${found:-unknown}', which the runtime stage does not install"
done
log "the addon's $(ldd "$rt_addon" | grep -c '=> /') libraries all come from the runtime packages and their dependencies"

# 4. A smoke run of the runtime stage's root, as its user.
step "smoke run: ENTRYPOINT $runtime_entrypoint CMD $runtime_cmd as USER ${runtime_user:-root}"
uid="${runtime_user%%:*}"
gid="${runtime_user#*:}"
[ -n "$uid" ] && [ "$uid" != 0 ] && [ "$uid" != root ] || fail "the runtime stage runs as root"
rt_wd=$(inside "$rt_root" "${runtime_workdir:-/}")
for v in "${runtime_volumes[@]}"; do
  for d in $(echo "$v" | tr -d '[]",'); do
    mkdir -p "$(inside "$rt_root" "$d")"
    [ "$(id -u)" = 0 ] && chown "$uid:$gid" "$(inside "$rt_root" "$d")"
  done
done
# The user can read only what the image holds: every directory up to the stage's root must be traversable.
chmod 0755 "$rt_root"
port=$(node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
token="vgt_smoke-$(node -e "console.log(require('crypto').randomBytes(16).toString('hex'))")"
sha=$(node -e "console.log(require('crypto').createHash('sha256').update(process.argv[1]).digest('hex'))" "$token")
cat >"$tmp/smoke-config.yaml" <<EOF
server:
  port: $port
logging:
  level: warn
auth:
  apiTokens:
    - name: smoke
      sha256: $sha
  bindings:
    - subjects: ["token:smoke"]
      roles: [operator]
      tenants: ["*"]
platforms:
  - id: libvirt-test
    kind: libvirt
    uri: test:///default
EOF
chmod 0644 "$tmp/smoke-config.yaml"
# The stage's ENV, with paths inside the image mapped to its root here, and,
# as `docker run -e HOST=127.0.0.1 -e VIRT_GRAPH_CONFIG=...` would set them:
# loopback only, and the smoke configuration.
declare -A overrides=([HOST]=127.0.0.1 [VIRT_GRAPH_CONFIG]="$tmp/smoke-config.yaml")
smoke_env=(PATH="$PATH")
for e in "${runtime_env[@]}"; do
  while IFS= read -r kv; do
    [ -n "$kv" ] || continue
    k="${kv%%=*}"
    v="${kv#*=}"
    case "$v" in /*) v=$(inside "$rt_root" "$v") ;; esac
    [ -n "${overrides[$k]:-}" ] || smoke_env+=("$k=$v")
  done < <(eval "printf '%s\n' $e")
done
for k in "${!overrides[@]}"; do smoke_env+=("$k=${overrides[$k]}"); done
mapfile -t cmd < <(node -e '
  const [ep, cmd, root] = process.argv.slice(1);
  for (const a of [...JSON.parse(ep), ...JSON.parse(cmd)])
    console.log(a.startsWith("/") && require("fs").existsSync(root + a) ? root + a : a);
' -- "$runtime_entrypoint" "$runtime_cmd" "$rt_root")
as_user=()
if [ "$(id -u)" = 0 ]; then as_user=(setpriv --reuid="$uid" --regid="$gid" --clear-groups --); fi
log "env: ${smoke_env[*]}"
log "command: ${cmd[*]}"
(cd "$rt_wd" && exec env -i "${smoke_env[@]}" "${as_user[@]}" "${cmd[@]}") >"$tmp/smoke.log" 2>&1 &
smoke_pid=$!
base="http://127.0.0.1:$port"
wait_for() {
  local path="$1" i
  for i in $(seq 1 120); do
    if curl -sf -o /dev/null "$base$path"; then return 0; fi
    kill -0 "$smoke_pid" 2>/dev/null || {
      cat "$tmp/smoke.log" >&2
      fail "the gateway exited before $path answered 200"
    }
    sleep 0.5
  done
  cat "$tmp/smoke.log" >&2
  fail "$path did not answer 200 within 60 s"
}
wait_for /healthz
log "GET /healthz: $(curl -s "$base/healthz")"
wait_for /readyz
log "GET /readyz: $(curl -s "$base/readyz" | head -c 300)"
answer=$(curl -s "$base/graphql" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"query":"{ platforms { name status } }"}')
log "POST /graphql { platforms { name status } }: $answer"
echo "$answer" | grep -q '"status":"CONNECTED"' || fail "the libvirt test driver is not CONNECTED"
# A mutation: its task and audit entry are written to the state directory, as the image's user.
gql() {
  curl -s "$base/graphql" -H "authorization: Bearer $token" -H 'content-type: application/json' -d "$1"
}
vm=$(gql '{"query":"{ virtualMachines(first: 1) { edges { node { id name } } } }"}' |
  node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).data.virtualMachines.edges[0].node.id))')
answer=$(gql "{\"query\":\"mutation { pauseVm(input: { vmId: \\\"$vm\\\" }) { task { state } userErrors { code message } } }\"}")
log "POST /graphql pauseVm: $answer"
echo "$answer" | grep -q '"userErrors":\[\]' || fail "pauseVm was refused"
metrics=$(curl -s -o /dev/null -w '%{http_code}' "$base/metrics" -H "authorization: Bearer $token")
log "GET /metrics (with the token): HTTP $metrics"
[ "$metrics" = 200 ] || fail "GET /metrics answered $metrics"
if [ -n "$runtime_healthcheck" ]; then
  mapfile -t hc < <(node -e 'const m = /CMD\s+(\[.*\])\s*$/.exec(process.argv[1]); for (const a of JSON.parse(m[1])) console.log(a);' -- "$runtime_healthcheck")
  [ "${#hc[@]}" -gt 0 ] || fail "HEALTHCHECK: only the exec form (CMD [...]) is supported by this check"
  (env -i PATH="$PATH" PORT="$port" "${hc[@]}") || fail "HEALTHCHECK command failed"
  log "HEALTHCHECK command: exit 0"
fi
kill -TERM "$smoke_pid"
status=0
wait "$smoke_pid" || status=$?
smoke_pid=""
[ "$status" = 0 ] || {
  cat "$tmp/smoke.log" >&2
  fail "the gateway exited $status after SIGTERM"
}
written=$(cd "$rt_wd" && find . -type f -user "$uid" | sort | tr '\n' ' ')
[ -n "$written" ] || fail "nothing was written to the state directory ($rt_wd)"
log "SIGTERM: exit 0; written to the working directory (the state volume) as uid $uid: $written"
[ -s "$tmp/smoke.log" ] && log "its log (warn and above): $(head -c 600 "$tmp/smoke.log")"
step "all checks passed in $(($(date +%s) - started)) s"
