#!/bin/sh
# Used by deploy/Dockerfile: turns a tree holding only the workspace's Cargo manifests into a
# buildable skeleton (an empty file for every target a manifest names, a `src/lib.rs` per
# crate, a `build.rs` where there are build dependencies), so `cargo build` compiles every
# dependency in a layer that changes only when a manifest or Cargo.lock does.
set -eu
stub() { [ -e "$1" ] || { mkdir -p "$(dirname "$1")"; printf '%s\n' "$2" > "$1"; }; }
for manifest in $(find . -name Cargo.toml -not -path './target/*' | sort); do
    dir=$(dirname "$manifest")
    grep -q '^\[package\]' "$manifest" || continue
    stub "$dir/src/lib.rs" ""
    # Explicit target paths ([[bin]], [[test]], [[bench]] with `path = "..."`).
    for path in $(sed -n 's/^path *= *"\(.*\)"/\1/p' "$manifest"); do
        stub "$dir/$path" "fn main() {}"
    done
    # [[bench]] without a path: benches/<name>.rs.
    awk '/^\[\[bench\]\]/{b=1;next} /^\[/{b=0} b && /^name *=/{gsub(/.*= *"|".*/,"");print}' "$manifest" |
        while read -r name; do stub "$dir/benches/$name.rs" "fn main() {}"; done
    if grep -q '^\[build-dependencies\]' "$manifest"; then stub "$dir/build.rs" "fn main() {}"; fi
done
