#!/usr/bin/env bash
# Prepares a checkout of Maxwell: nats-server, Node >= 20, dependencies, build.
# Safe to run again: each step is skipped or cheap when already done.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*"; }
fail() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    fail "need root to run '$*' and sudo is not available"
  fi
}

install_hint() {
  cat >&2 <<'HINT'
bootstrap: nats-server is not installed and no package manager here can install it. Either:
  - Debian/Ubuntu:  sudo apt-get install nats-server
  - macOS:          brew install nats-server
  - a release binary from https://github.com/nats-io/nats-server/releases, on PATH
  - or point Maxwell at an existing binary:  export MAXWELL_NATS_SERVER=/path/to/nats-server
HINT
}

# 1. nats-server
if [ -n "${MAXWELL_NATS_SERVER:-}" ]; then
  step "nats-server: using MAXWELL_NATS_SERVER=${MAXWELL_NATS_SERVER}"
  [ -x "${MAXWELL_NATS_SERVER}" ] || fail "MAXWELL_NATS_SERVER=${MAXWELL_NATS_SERVER} is not an executable file"
elif command -v nats-server >/dev/null 2>&1; then
  step "nats-server: found $(command -v nats-server)"
elif [ -x /usr/sbin/nats-server ]; then
  # Debian's package puts it here, which is not on every user's PATH; Maxwell looks here too.
  step "nats-server: found /usr/sbin/nats-server"
elif command -v apt-get >/dev/null 2>&1; then
  step "nats-server: installing with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] \
    || fail "apt-get finished but nats-server is still missing"
elif [ "$(uname -s)" = "Darwin" ] && command -v brew >/dev/null 2>&1; then
  step "nats-server: installing with brew"
  brew install --quiet nats-server
else
  install_hint
  exit 1
fi

# 2. Node.js >= 20
command -v node >/dev/null 2>&1 || fail "node is not installed; Maxwell needs Node.js 20 or newer (https://nodejs.org)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "${node_major}" -lt 20 ]; then
  fail "Node.js $(node --version) is too old; Maxwell needs Node.js 20 or newer (https://nodejs.org)"
fi
step "node: $(node --version)"

# 3. Dependencies
if [ -d node_modules ] && npm ls --all >/dev/null 2>&1; then
  step "dependencies: node_modules already matches package.json"
elif [ -f package-lock.json ]; then
  step "dependencies: npm ci"
  ci_log="$(mktemp)"
  trap 'rm -f "${ci_log}"' EXIT
  if ! npm ci --no-audit --no-fund --loglevel=error 2>"${ci_log}"; then
    grep -E 'error (code|Missing)|ERR!' "${ci_log}" | head -n 8 >&2 || true
    # npm 11 rejects lockfiles that omit optional platform packages the registry did not serve
    # (npm/cli#9846); install from package.json without rewriting the lockfile instead.
    step "dependencies: npm ci failed; retrying with npm install --no-save (check package-lock.json)"
    npm install --no-save --no-audit --no-fund --loglevel=error
  fi
else
  step "dependencies: npm install (no package-lock.json)"
  npm install --no-audit --no-fund --loglevel=error
fi

# 4. Build
step "build: npm run build"
npm run --silent build
step "ready"
