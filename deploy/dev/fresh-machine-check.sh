#!/usr/bin/env bash
# Runs the README's test command the way a new machine would: a clean `git clone` of BRANCH in
# a container made from a debootstrap'd Debian bookworm root (minbase + gcc, libc6-dev,
# ca-certificates, git, make: no redis-server, nats-server, chromium, promtool, Python, Helm
# engine or kubernetes-validate), with this host's Rust toolchain mounted read-only (rustup,
# and cargo-nextest where the machine image has it, /usr/local/bin), a fresh cargo home, the Docker CLI and socket, and the host network (the
# full-stack suite reaches containers through ports published on loopback).
#
# Usage (root, on the project's machine): deploy/dev/fresh-machine-check.sh BRANCH [make args]
#   e.g. deploy/dev/fresh-machine-check.sh main IMAGE_TAG=fresh
# Prints everything `make test` prints; exits with its status.
set -euo pipefail
cd "$(dirname "$0")/../.."

branch=${1:?usage: $0 BRANCH [make args]}; shift
repo=$(git rev-parse --git-common-dir)
repo=$(cd "$repo" && pwd)
root=${DAISI_CACHE_DIR:-$HOME/.cache/daisi}/bookworm-fresh
image=daisi-fresh/bookworm:check

if [ ! -x "$root/usr/bin/git" ]; then
    command -v debootstrap >/dev/null || { echo "apt-get install -y debootstrap first" >&2; exit 1; }
    rm -rf "$root.partial" && mkdir -p "$(dirname "$root")"
    debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates,git,make \
        bookworm "$root.partial" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
    mv "$root.partial" "$root"
fi
# The machine's apt sources (with updates and security) and trust store (a TLS-inspecting
# proxy's CA, when there is one), as a new machine of this kind has them.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -a "$root/." "$stage/"
rm -f "$stage/etc/apt/sources.list"
cp /etc/apt/sources.list.d/*.sources "$stage/etc/apt/sources.list.d/"
cp -L /etc/ssl/certs/ca-certificates.crt "$stage/etc/ssl/certs/ca-certificates.crt"
tar -C "$stage" -c . | docker import \
    --change 'ENV PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$image" >/dev/null

echo "fresh-machine-check: clone of $branch ($(git rev-parse --short "$branch")) in $image"
docker run --rm --network host --shm-size 1g --ulimit nofile=20000:20000 \
    -v "$HOME/.rustup:/root/.rustup:ro" \
    -v "$HOME/.cargo/bin:/root/.cargo/bin:ro" \
    -v "$(command -v cargo-nextest):/usr/local/bin/cargo-nextest:ro" \
    -v /var/run/docker.sock:/var/run/docker.sock \
    -v "$(command -v docker):/usr/bin/docker:ro" \
    -v "$repo:/src.git:ro" \
    -e RUSTUP_HOME=/root/.rustup -e CARGO_HOME=/root/.cargo -e CI=true \
    "$image" bash -c '
        set -e
        for tool in redis-server nats-server chromium chromedriver promtool python3 helm; do
            command -v "$tool" >/dev/null && echo "unexpected: $tool is installed" && exit 1
        done
        echo "fresh: none of redis-server nats-server chromium chromedriver promtool python3 helm"
        git clone -q --branch "$0" /src.git /work/daisi
        cd /work/daisi
        start=$(date +%s)
        make test "$@"
        echo "fresh: make test passed in $(( $(date +%s) - start ))s"
    ' "$branch" "$@"
