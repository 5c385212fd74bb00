# `make` builds the eBPF objects and the TypeScript. `make demo` and
# `make test` first install what a fresh Debian machine lacks.
BPF_CFLAGS := -target bpf -O2 -g -Wall -Werror -I/usr/include/$(shell uname -m)-linux-gnu
BPF_OBJS := build/bpf/redirect.o build/bpf/inbound.o
BPF_HDRS := $(wildcard bpf/lib/*.h)

.PHONY: all build bpf ts deps lint format demo test test-unit test-netns bench bench-policy compare bench-memory hygiene fuzz vm-test clean

all: build
build: bpf ts

bpf: $(BPF_OBJS)
build/bpf/%.o: bpf/%.c $(BPF_HDRS)
	@mkdir -p build/bpf
	clang $(BPF_CFLAGS) -c $< -o $@

ts: node_modules
	npx tsc -p tsconfig.json

node_modules: package-lock.json
	npm ci --no-audit --no-fund
	@touch node_modules

deps:
	bash scripts/install-deps.sh

# Format, lint (Biome) and folder rules (dependency-cruiser: .dependency-cruiser.cjs).
# `make format` rewrites what `make lint` would refuse on format alone.
lint: node_modules
	npx biome check --error-on-warnings .
	npx depcruise src --config .dependency-cruiser.cjs
	npx tsc -p tsconfig.json --noEmit

format: node_modules
	npx biome check --write --linter-enabled=false .

demo: deps
	$(MAKE) build
	node dist/demo/demo.js

test: deps
	$(MAKE) build
	node --test dist/test/unit/
	node --test --test-concurrency=1 dist/test/netns/

bench: deps
	$(MAKE) build
	node dist/bench/steering.js

# Authorization checks and xDS encode/decode, in-process (no root needed).
bench-policy: deps
	$(MAKE) build
	node dist/bench/policy.js

# No mesh vs ambient vs sidecar vs stunnel (BENCH_REPEATS, BENCH_PODS).
compare: deps
	$(MAKE) build
	node dist/bench/compare.js

# RSS of one node's agent and each tunnel worker at BENCH_PODS (1,50) pods: ready, warm, under load.
bench-memory: deps
	$(MAKE) build
	node dist/bench/memory.js

# Growth of fds, memory, handles across BENCH_CONNECTIONS (100,000) short connections.
hygiene: deps
	$(MAKE) build
	node dist/bench/hygiene.js

# Fuzz campaign: mesh YAML, xDS resources, Istio policies, and random HTTP/2
# frames against a running tunnel (root). FUZZ_INPUTS (1,000,000 per target),
# FUZZ_SEED, FUZZ_TARGETS, FUZZ_HBONE_SECONDS (600).
fuzz: deps
	$(MAKE) build
	node --no-warnings dist/test/fuzz/campaign.js

# The datapath and tunnel namespace tests inside QEMU (software emulation) on
# Debian's kernels: KERNELS="5.10 6.1" (bullseye, bookworm), or one of them.
KERNELS ?= 5.10 6.1
vm-test: deps
	$(MAKE) build
	bash scripts/vm-test.sh $(KERNELS)

clean:
	rm -rf build dist
