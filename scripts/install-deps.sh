#!/usr/bin/env bash
# Installs what ambit needs on a Debian 12 machine and prepares the mounts
# the datapath uses. Idempotent: installs only what is missing. The one
# script behind `make demo`, `make test` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: run as root (apt-get, mounts, CAP_BPF for the tests)" >&2
  exit 1
fi

# Debian packages: clang/llvm build bpf/*.c; libbpf1 is loaded through koffi;
# bpftool inspects links in the tests; iproute2 and util-linux (nsenter) build
# the namespace test bed; tcpdump captures the wire in the demo; stunnel4 is
# the C/OpenSSL mutual-TLS reference of `make compare`; python3-grpcio,
# python3-protobuf, protobuf-compiler (+ libprotobuf-dev for the well-known
# .proto files) and python3-cryptography are the independent client of the
# wire-compatibility test; containernetworking-plugins (bridge, host-local
# in /usr/lib/cni) are the plugins the CNI test chains ambit-cni after.
packages=(clang llvm libbpf-dev libbpf1 bpftool iproute2 util-linux tcpdump make stunnel4 containernetworking-plugins
  python3 python3-grpcio python3-protobuf protobuf-compiler libprotobuf-dev python3-cryptography shellcheck ruby)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "install-deps: Node.js >= 20 is required (found ${node_major}); install it from your distribution or nodejs.org" >&2
  exit 1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules
fi

# bpffs: pinned maps and links live here.
if ! grep -qs '^[^ ]* /sys/fs/bpf bpf ' /proc/mounts; then
  mount -t bpf bpf /sys/fs/bpf
fi
# cgroup v2: pods are cgroup v2 directories. Hybrid hosts mount it at
# /sys/fs/cgroup/unified; a host with none gets one there.
if ! grep -qs ' cgroup2 ' /proc/mounts; then
  mkdir -p /sys/fs/cgroup/unified
  mount -t cgroup2 none /sys/fs/cgroup/unified
fi
mkdir -p /var/run/netns
