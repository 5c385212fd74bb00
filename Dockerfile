# The ambit image: `ambit node` (DaemonSet) and `ambit control-plane`
# (Deployment) from daemonset/. Not built on the development machine (it has
# no container engine): scripts/provision-k8s.sh builds it on each Vagrant
# node with buildah, and test/unit/manifests.test.ts checks that every path
# copied below exists after `make build` and that the entrypoint is the
# manifests' command. Base images are fully qualified so that buildah/podman
# need no short-name configuration.

# Build: the eBPF objects (clang) and the TypeScript, then production
# dependencies only. `make build` is bpf + ts; it never runs
# scripts/install-deps.sh (that is `make deps`, for hosts, not images).
FROM docker.io/library/node:20-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY Makefile tsconfig.json ./
COPY bpf/ bpf/
COPY proto/ proto/
COPY src/ src/
RUN make build && npm prune --omit=dev --no-audit --no-fund

# Run: Node 20 and libbpf1 (loaded through koffi). Nothing else: ambit spawns
# no binaries (its tunnel workers are `node` itself), so no iproute2. The
# DaemonSet's install-cni init container uses the base's sh and coreutils and
# copies its /usr/local/bin/node to the host, where the ambit-cni plugin runs
# (a glibc build: the host needs glibc 2.28+ and libstdc++, as most do).
FROM docker.io/library/node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libbpf1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
# src/datapath/loader.ts reads <dist/src/datapath>/../../../build/bpf, and
# src/protocol/protos.ts <dist/src/protocol>/../../../proto.
COPY --from=build /src/build/bpf ./build/bpf
COPY --from=build /src/proto ./proto
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
