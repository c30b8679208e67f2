# daisi — common tasks. `make help` lists them.
#
# Everything builds into one target dir (./target) in the dev profile: release builds stay out of
# the test path because they are slow on small machines.

CARGO ?= cargo
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)
DOCKER := $(shell docker info >/dev/null 2>&1 && echo yes)
# Tag of the images the test suite builds and runs (debug binaries through deploy/Dockerfile).
# Engineers sharing one Docker engine each use their own: `make test IMAGE_TAG=mine`.
IMAGE_TAG ?= dev
# The full-stack suite runs on Docker when an engine answers (processes otherwise), on images
# built from this machine (no registry needed): the services through deploy/Dockerfile, Redis
# and NATS from the host's binaries. Set DAISI_IT_REDIS_IMAGE / DAISI_IT_NATS_IMAGE to
# redis:7 / nats:2.10 where the official images can be pulled.
ifeq ($(DOCKER),yes)
IT_ENV := DAISI_IT_LAUNCHER=docker DAISI_IT_IMAGE_TAG=$(IMAGE_TAG) DAISI_IT_REDIS_IMAGE=$${DAISI_IT_REDIS_IMAGE:-daisi/redis:$(IMAGE_TAG)} DAISI_IT_NATS_IMAGE=$${DAISI_IT_NATS_IMAGE:-daisi/nats:$(IMAGE_TAG)}
else
IT_ENV := DAISI_IT_LAUNCHER=process
endif

.DEFAULT_GOAL := help
.PHONY: help setup build run run-local test lint chart fmt fmt-check clippy doc proto generate images test-images clean fuzz \
        benchmark benchmark-auth benchmark-conn benchmark-msg benchmark-integration \
        benchmark-edge benchmark-router benchmark-load \
        benchmark-compare benchmark-baseline benchmark-clean

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-24s %s\n", $$1, $$2}'

build: ## build every crate and binary (debug)
	$(CARGO) build --workspace --all-targets

run: ## start the whole system in one process with in-memory backends (`daisi dev`)
	$(CARGO) run -p daisi-cli -- dev

run-local: ## the stack as separate processes on a local redis-server and nats-server
	./deploy/dev/run-local.sh

setup: ## install what the tests need (Debian and PyPI packages), or name the one command that does
	./deploy/dev/setup.sh

# The gate builds one set of artefacts and nothing twice, so that it fits a small CI disk (a run
# that filled one failed in its last step): no incremental caches (a clean build gains nothing
# from them; they were 2.6 GB of the 6.4 GB target dir), the binaries for the images built with
# the same dependency features as the tests (`--bins` alone resolves features without
# dev-dependencies: a second copy of tokio, redis, ...), and the process round selected by a
# filter instead of `-p`, which would resolve (and build) a third feature set.
test: export CARGO_INCREMENTAL := 0
test: setup fmt-check clippy chart ## the full gate: set-up, fmt, clippy, chart, every test (full stack on Docker and as processes), docs
	@df -h $(CURDIR) | awk 'NR == 2 { print "test: " $$4 " free on the disk of the target dir" }'
ifeq ($(NEXTEST),yes)
	$(CARGO) nextest run --workspace --no-run
else
	$(CARGO) test --workspace --no-run
endif
ifeq ($(DOCKER),yes)
	./deploy/images/build.sh --tag $(IMAGE_TAG) --prebuilt debug --skip-cargo
endif
ifeq ($(NEXTEST),yes)
	$(IT_ENV) $(CARGO) nextest run --workspace --no-fail-fast
	DAISI_IT_LAUNCHER=process $(CARGO) nextest run --workspace -E 'package(daisi-integration-tests)' --no-fail-fast
	$(CARGO) test --workspace --doc
else
	$(IT_ENV) $(CARGO) test --workspace --no-fail-fast
	DAISI_IT_LAUNCHER=process $(CARGO) test -p daisi-integration-tests --no-fail-fast
endif
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet
	@df -h $(CURDIR) | awk 'NR == 2 { print "test: " $$4 " free on the disk of the target dir at the end" }'

lint: fmt-check clippy chart ## formatting, clippy (warnings are errors), the Helm chart

chart: ## lint, render and validate the Helm chart against the Kubernetes schemas (fails when it cannot)
	python3 helm/daisi/ci/check_chart.py

fmt: ## format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc: ## build the API docs
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

proto: ## regenerate gRPC code from proto/ (pure Rust: protox, no protoc needed)
	touch libs/proto/build.rs
	$(CARGO) build -p daisi-proto

generate: proto ## every generated artefact

images: ## release images daisi/<service>:<version> through deploy/Dockerfile, plus Redis and NATS, with no registry
	./deploy/images/build.sh

test-images: ## the test suite's images (debug binaries through deploy/Dockerfile), tagged IMAGE_TAG
	./deploy/images/build.sh --tag $(IMAGE_TAG) --prebuilt debug

# Fuzzing (fuzz/, not a workspace member): cargo-fuzz drives libFuzzer with nightly compiler
# flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Each target runs for
# FUZZ_SECONDS; a crash stops the run and leaves its input under fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := client_frame token_decode subject_parse event_render

fuzz: ## run every fuzz target for FUZZ_SECONDS each (installs cargo-fuzz when missing)
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for target in $(FUZZ_TARGETS); do \
		echo "fuzz: $$target for $(FUZZ_SECONDS) s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

clean: ## remove build output
	$(CARGO) clean

# Benchmarks (names kept from the old service's Makefile). Criterion prints medians; quote
# them with the command. Release builds only here, never in the test path.
benchmark: benchmark-auth benchmark-msg benchmark-edge benchmark-router benchmark-integration ## every criterion benchmark

benchmark-auth: ## token encode/decode (criterion)
	$(CARGO) bench -p daisi-benches --bench domain -- token

benchmark-conn: ## 10,000 sockets on one edge: connect time, RSS per socket, fan-out latency
	ulimit -n 20000; $(CARGO) run --release -p daisi-edge --example socket_load -- 10000

benchmark-msg: ## event frame rendering, client message and subject parsing (criterion)
	$(CARGO) bench -p daisi-benches --bench domain -- 'render|parse'

benchmark-integration: ## coordinator store on real Redis vs memory; router stream-to-edge throughput
	$(CARGO) bench -p daisi-coordinator --bench store
	$(CARGO) bench -p daisi-router --bench throughput

benchmark-edge: ## edge: fan-out to 1/100/10,000 sockets, token validation cached/uncached, socket registration (criterion)
	$(CARGO) bench -p daisi-edge --bench edge

benchmark-router: ## router: per-event path from the stream to a stub edge, alone and in bursts (criterion)
	$(CARGO) bench -p daisi-router --bench pipeline

benchmark-load: ## release stack (run-local) under `daisi bench`: the standard workloads into docs/performance.md
	python3 benches/load/standard.py

# The criterion suites `benchmark-compare` and `benchmark-baseline` cover.
CRITERION_SUITES := daisi-benches:domain daisi-edge:edge daisi-router:pipeline daisi-coordinator:store

benchmark-compare: ## criterion benchmarks against the `main` baseline; fails on a median >10 % slower
	@mkdir -p target/criterion && touch target/criterion/.compare-start
	@set -e; for s in $(CRITERION_SUITES); do \
		$(CARGO) bench -p $${s%%:*} --bench $${s##*:} -- --baseline main; done
	python3 benches/compare.py --threshold 10 --since target/criterion/.compare-start

benchmark-baseline: ## save the current criterion results as the `main` baseline
	@set -e; for s in $(CRITERION_SUITES); do \
		$(CARGO) bench -p $${s%%:*} --bench $${s##*:} -- --save-baseline main; done

benchmark-clean: ## forget saved benchmark results
	rm -rf target/criterion
