#!/usr/bin/env bash
# `make vm-test`: the datapath and tunnel namespace tests on the kernels
# Debian ships — Linux 5.10 (bullseye) and 6.1 (bookworm) — each booted in
# QEMU, so the eBPF programs are proven on the oldest kernels we claim and
# not only on whatever kernel the host happens to run.
#
#   scripts/vm-test.sh [KERNEL...]      KERNEL: 5.10 | 6.1 (or bullseye | bookworm)
#                                       default: $KERNELS, else "5.10 6.1"
#
# How (one kernel):
#   1. apt fetches linux-image-<series>.*-amd64-unsigned (the newest in the
#      suite and its -updates/-security) with a private sources list, state
#      and cache under $AMBIT_VM_CACHE: the machine's own apt sources and
#      package state are never touched. The package is unpacked there and
#      depmod'ed (Debian generates modules.dep in postinst, which we skip).
#   2. A tiny initramfs (static busybox + the 9p/virtio/overlay modules that
#      modules.dep names + a generated /init) puts the guest's root together:
#      the host's own / over 9p, read-only, under a tmpfs overlay (writes stay
#      in the guest and vanish with it), then switch_root's into it and runs
#      this script again with --guest, with the host's bash, node and iproute2.
#   3. The guest mounts what the datapath expects (bpffs at /sys/fs/bpf,
#      cgroup2 at /sys/fs/cgroup, tmpfs /run with /run/netns), runs
#      `ambit datapath probe` and the test files, writes probe output, TAP,
#      exit codes and timings into a second, writable 9p share, and powers
#      off. QEMU exits 0 whatever happened inside, so the host judges only by
#      what the guest wrote there; no "status" file means the guest never
#      finished (crash or timeout) and counts as a failure.
#
# Knobs (environment):
#   AMBIT_VM_CACHE=/var/cache/ambit-vm   kernels, apt state (outside the repo, kept across clones)
#   AMBIT_VM_TIMEOUT=2700                seconds per kernel before QEMU is killed
#   AMBIT_VM_MEM=4096 AMBIT_VM_SMP=2     guest memory (MiB) and vCPUs
#   AMBIT_VM_TESTS="probe capture tunnel ipv6"  files of dist/test/netns/ (without .test.js)
#   AMBIT_VM_TEST_PATTERN=               --test-name-pattern for every file (a subset)
#   AMBIT_VM_TEST_TIMEOUT_MS=900000      node --test-timeout: a hung test fails instead of eating the budget
#   AMBIT_TEST_TIME_SCALE=10             multiplies the tests' waits (test/helpers/proc.ts): TCG is ~10x slower
#   AMBIT_VM_MIRROR, AMBIT_VM_SECURITY_MIRROR   Debian mirrors (default deb.debian.org)
#
# Needs root (apt, and QEMU reads the whole host root to export it). No KVM:
# the machines this runs on have /dev/kvm without hardware virtualisation, so
# QEMU emulates the CPU (TCG); a kernel boots in seconds, JavaScript runs ~10x
# slower than on the host.
set -euo pipefail

# ---------------------------------------------------------------- guest side
# Runs as PID 1 of the guest (exec'ed by the initramfs' /init after
# switch_root). Whatever happens, the EXIT trap powers the guest off: a PID 1
# that exits panics the kernel, which would only reboot into -no-reboot.
guest_poweroff() {
  sync
  echo "ambit-vm: powering off"
  # /proc/sysrq-trigger works whatever kernel.sysrq says; no init to ask.
  echo o > /proc/sysrq-trigger
  sleep 60
}

guest_main() {
  trap guest_poweroff EXIT
  local R=/run/ambit-results
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
  echo "ambit-vm: guest stage on $(uname -r), $(nproc) vCPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
  uname -r > "$R/uname"
  hostname ambit-vm
  ip link set lo up
  # veth and bridge are modules on Debian's kernels; the kernel would load
  # them on demand through /sbin/modprobe (the host's kmod, with this
  # kernel's tree linked at /lib/modules by /init), but loading them here
  # makes a broken module setup fail loudly, once.
  modprobe -a veth bridge || echo "ambit-vm: modprobe veth bridge failed (the tests will say what is missing)"
  cd "$AMBIT_VM_REPO"

  local rc=0
  node dist/src/cli/main.js datapath probe > "$R/probe.txt" 2>&1 < /dev/null || rc=$?
  echo "$rc" > "$R/probe.rc"
  sed 's/^/ambit-vm: probe: /' "$R/probe.txt"

  local t f start end args
  for t in $AMBIT_VM_TESTS; do
    f="dist/test/netns/$t.test.js"
    if [ ! -f "$f" ]; then
      echo "ambit-vm: $f does not exist"
      echo 127 > "$R/$t.rc"
      continue
    fi
    echo "ambit-vm: running $f"
    # TAP to the share for the host to count; spec on the console as progress.
    args=(--test --test-concurrency=1 "--test-timeout=$AMBIT_VM_TEST_TIMEOUT_MS"
      --test-reporter=tap "--test-reporter-destination=$R/$t.tap"
      --test-reporter=spec --test-reporter-destination=stdout)
    if [ -n "$AMBIT_VM_TEST_PATTERN" ]; then args+=("--test-name-pattern=$AMBIT_VM_TEST_PATTERN"); fi
    start=$(cut -d' ' -f1 /proc/uptime)
    rc=0
    AMBIT_TEST_TIME_SCALE="$AMBIT_TEST_TIME_SCALE" FORCE_COLOR=0 node "${args[@]}" "$f" < /dev/null || rc=$?
    end=$(cut -d' ' -f1 /proc/uptime)
    echo "$rc" > "$R/$t.rc"
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", b - a }' > "$R/$t.seconds"
    echo "ambit-vm: $f exited $rc after $(cat "$R/$t.seconds") s"
  done
  echo complete > "$R/status"
}

if [ "${1:-}" = --guest ]; then
  guest_main
  exit 0
fi

# ----------------------------------------------------------------- host side
REPO=$(cd "$(dirname "$0")/.." && pwd)
SCRIPT="$REPO/scripts/vm-test.sh"
CACHE=${AMBIT_VM_CACHE:-/var/cache/ambit-vm}
TIMEOUT=${AMBIT_VM_TIMEOUT:-2700}
MEM=${AMBIT_VM_MEM:-4096}
SMP=${AMBIT_VM_SMP:-2}
TESTS=${AMBIT_VM_TESTS:-probe capture tunnel ipv6}
PATTERN=${AMBIT_VM_TEST_PATTERN:-}
TEST_TIMEOUT_MS=${AMBIT_VM_TEST_TIMEOUT_MS:-900000}
SCALE=${AMBIT_TEST_TIME_SCALE:-10}
MIRROR=${AMBIT_VM_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${AMBIT_VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

if [ $# -gt 0 ]; then read -r -a KLIST <<< "$*"; else read -r -a KLIST <<< "${KERNELS:-5.10 6.1}"; fi

say() { echo "vm-test: $*"; }
die() { echo "vm-test: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get, and QEMU exports the host's root to the guest)"
[ -f "$REPO/dist/src/cli/main.js" ] || die "dist/ is missing: run make build (make vm-test does)"

# qemu-system-x86: the emulator; busybox-static: the initramfs' only binary
# (must be static: nothing else is in there); cpio: packs the initramfs;
# kmod: depmod/modprobe resolve module dependencies here, and in the guest
# the host's modprobe loads veth/bridge on demand; debian-archive-keyring
# verifies the bullseye/bookworm indexes.
packages=(qemu-system-x86 busybox-static cpio kmod debian-archive-keyring)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Kernel series → Debian suite that ships it.
suite_of() {
  case "$1" in
    5.10|bullseye) echo bullseye ;;
    6.1|bookworm) echo bookworm ;;
    *) die "unknown kernel '$1': use 5.10 (bullseye) or 6.1 (bookworm)" ;;
  esac
}
series_of() { case "$1" in bullseye) echo 5.10 ;; bookworm) echo 6.1 ;; *) echo "$1" ;; esac; }

# The one lib/modules/<version> directory of an unpacked kernel package
# (lib/ or, on merged-/usr packages, usr/lib/).
moddir_of() {
  local d
  for d in "$1"/lib/modules/* "$1"/usr/lib/modules/*; do
    if [ -d "$d" ]; then echo "$d"; return; fi
  done
}

# fetch_kernel SERIES: sets KROOT (unpacked package), KVER (uname -r), KPKG, KPKGVER.
fetch_kernel() {
  local series=$1 suite apt_dir re pkg ver deb
  suite=$(suite_of "$series")
  apt_dir="$CACHE/apt/$suite"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$CACHE/debs" "$CACHE/kernels"
  cat > "$apt_dir/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR $suite main
deb [signed-by=$KEYRING] $MIRROR $suite-updates main
deb [signed-by=$KEYRING] $SECURITY_MIRROR $suite-security main
EOF
  # Private everything: the host's sources, lists, cache and dpkg state are
  # neither read for packages nor written.
  local apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o Dir::State::status=/dev/null
    -o APT::Sandbox::User=root)
  # Refresh the indexes once a day: kernels get security updates. (A stamp
  # of our own: apt dates the index files by the mirror's Last-Modified.)
  if ! find "$apt_dir/updated" -mmin -1440 2>/dev/null | grep -q .; then
    say "$series: apt-get update ($suite, $suite-updates, $suite-security)"
    if apt-get "${apt_opts[@]}" update -qq; then touch "$apt_dir/updated"
    else say "$series: apt-get update failed; using what is cached"; fi
  fi
  # The generic flavour (not cloud: it has no 9p), unsigned (we boot it
  # directly, Secure Boot signatures are of no use); newest ABI wins.
  re="^linux-image-${series//./\\.}\.[0-9]+-[0-9]+-amd64-unsigned\$"
  pkg=$(apt-cache "${apt_opts[@]}" pkgnames "linux-image-$series." 2>/dev/null | grep -E "$re" | sort -V | tail -n1 || true)
  if [ -z "$pkg" ]; then
    # No index (offline): fall back to the newest kernel of the series unpacked before.
    KROOT=$(find "$CACHE/kernels" -maxdepth 2 -name .done -path "*/linux-image-$series.*" -printf '%h\n' 2>/dev/null | sort -V | tail -n1)
    [ -n "$KROOT" ] || die "$series: no linux-image-$series.*-amd64-unsigned in the $suite indexes and none cached"
    KPKG=$(basename "$KROOT"); KPKGVER=${KPKG#*_}; KPKG=${KPKG%%_*}
    say "$series: offline, using cached $KPKG $KPKGVER"
  else
    ver=$(apt-cache "${apt_opts[@]}" show --no-all-versions "$pkg" | awk '/^Version:/ {print $2; exit}')
    KPKG=$pkg KPKGVER=$ver
    KROOT="$CACHE/kernels/${pkg}_${ver}"
    if [ ! -f "$KROOT/.done" ]; then
      deb=$(ls "$CACHE/debs/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
      if [ -z "$deb" ]; then
        say "$series: downloading $pkg $ver"
        (cd "$CACHE/debs" && apt-get "${apt_opts[@]}" download -qq "$pkg=$ver")
        deb=$(ls "$CACHE/debs/${pkg}_${ver//:/%3a}_"*.deb | head -n1)
      fi
      rm -rf "$KROOT"
      mkdir -p "$KROOT"
      dpkg-deb -x "$deb" "$KROOT"
      local moddir
      moddir=$(moddir_of "$KROOT")
      [ -n "$moddir" ] || die "$series: $deb has no lib/modules"
      # depmod -b wants <base>/lib/modules/<ver>.
      depmod -b "${moddir%/lib/modules/*}" "$(basename "$moddir")"
      touch "$KROOT/.done"
      rm -f "$deb" # unpacked is all we use
      # Older kernels of the same series: no longer needed.
      find "$CACHE/kernels" -mindepth 1 -maxdepth 1 -name "linux-image-$series.*" ! -path "$KROOT" -exec rm -rf {} +
    fi
  fi
  KMODDIR=$(moddir_of "$KROOT")
  KVER=$(basename "$KMODDIR")
  [ -f "$KROOT/boot/vmlinuz-$KVER" ] || die "$series: no boot/vmlinuz-$KVER in $KROOT"
}

# build_initramfs OUT: busybox + the modules for a 9p/overlay root + /init.
build_initramfs() {
  local out=$1 dir m n=0 f base
  dir=$(mktemp -d)
  mkdir -p "$dir"/{bin,proc,lower,upper,newroot,modules}
  cp /bin/busybox "$dir/bin/busybox"
  for a in sh mount umount mkdir insmod switch_root cat ln sleep; do ln -s busybox "$dir/bin/$a"; done
  # 9p + 9pnet_virtio + virtio_pci: the host root and the results share
  # (netfs/fscache and the virtio core come in through modules.dep);
  # overlay: a writable root over the read-only share; virtio_rng: entropy,
  # so node's crypto never waits for the CRNG on an idle emulated machine.
  local base_dir=${KMODDIR%/lib/modules/*}
  for m in $( { for mod in 9p 9pnet_virtio virtio_pci overlay virtio_rng; do
                  modprobe -d "$base_dir" -S "$KVER" --show-depends "$mod" || die "module $mod not found for $KVER"
                done; } | awk '$1 == "insmod" && !seen[$2]++ { print $2 }'); do
    n=$((n + 1))
    base=$(printf '%02d-%s' "$n" "$(basename "$m")")
    case "$m" in
      *.ko.xz) xz -dc "$m" > "$dir/modules/${base%.xz}" ;;
      *.ko.zst) zstd -qdc "$m" > "$dir/modules/${base%.zst}" ;;
      *.ko.gz) gzip -dc "$m" > "$dir/modules/${base%.gz}" ;;
      *) cp "$m" "$dir/modules/$base" ;;
    esac
  done
  # Values for /init (it cannot see the host's environment); %q quoting is
  # plain backslashes for these values, which busybox sh reads as bash does.
  {
    printf 'export AMBIT_VM_KVER=%q\n' "$KVER"
    printf 'export AMBIT_VM_MODDIR=%q\n' "$KMODDIR"
    printf 'export AMBIT_VM_SCRIPT=%q\n' "$SCRIPT"
    printf 'export AMBIT_VM_REPO=%q\n' "$REPO"
    printf 'export AMBIT_VM_TESTS=%q\n' "$TESTS"
    printf 'export AMBIT_VM_TEST_PATTERN=%q\n' "$PATTERN"
    printf 'export AMBIT_VM_TEST_TIMEOUT_MS=%q\n' "$TEST_TIMEOUT_MS"
    printf 'export AMBIT_TEST_TIME_SCALE=%q\n' "$SCALE"
  } > "$dir/ambit-vm.env"
  cat > "$dir/init" <<'EOF'
#!/bin/sh
# PID 1 of the guest's initramfs, written by scripts/vm-test.sh: load the
# 9p modules, put the root together (host / read-only over 9p, a tmpfs
# overlay on top), mount what the datapath needs, and hand over to the
# host's bash running scripts/vm-test.sh --guest.
export PATH=/bin
mount -t proc proc /proc
read -r up _ < /proc/uptime
echo; echo "ambit-vm: /init at ${up}s after boot"
. /ambit-vm.env
fail() { echo "ambit-vm: init failed: $*"; echo o > /proc/sysrq-trigger; sleep 60; }
# A module that fails (say crc32c-intel on a CPU without SSE4.2) is reported;
# the mounts below fail loudly if it mattered.
for m in /modules/*.ko; do insmod "$m" || echo "ambit-vm: insmod $m failed"; done
# msize: as large as virtio allows (fewer round trips for node_modules);
# cache=loose: the host's files do not change during the run.
nine="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o "$nine,cache=loose,ro" hostroot /lower || fail "mount 9p hostroot"
mount -t tmpfs -o mode=0755 tmpfs /upper
mkdir /upper/rw /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/rw,workdir=/upper/work overlay /newroot || fail "mount overlay"
R=/newroot
# Fresh scratch (the host's /tmp and /run would show through otherwise).
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs -o mode=1777 tmpfs $R/var/tmp
mount -t tmpfs -o mode=0755 tmpfs $R/run
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
# What src/datapath/probe.ts looks for: bpffs holding /sys/fs/bpf/ambit,
# cgroup v2 at /sys/fs/cgroup (unified, as on a systemd host).
mount -t bpf bpf $R/sys/fs/bpf || fail "mount bpffs"
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || fail "mount cgroup2"
mkdir -p $R/run/netns $R/run/ambit-results
mount -t 9p -o "$nine" results $R/run/ambit-results || fail "mount 9p results"
# This kernel's modules where the host's modprobe looks for them.
mkdir -p $R/lib/modules
ln -s "$AMBIT_VM_MODDIR" $R/lib/modules/$AMBIT_VM_KVER
echo "$up" > $R/run/ambit-results/boot-seconds
umount /proc
exec switch_root /newroot /bin/bash "$AMBIT_VM_SCRIPT" --guest
EOF
  chmod +x "$dir/init"
  (cd "$dir" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
  rm -rf "$dir"
}

STAMP=$(date -u +%Y-%m-%dT%H-%M-%S-%3NZ)
RUNS="$REPO/build/vm/$STAMP"
mkdir -p "$RUNS"
QPID=
trap 'if [ -n "$QPID" ]; then kill "$QPID" 2>/dev/null || true; fi' EXIT
trap 'exit 130' INT TERM

run_kernel() {
  local series=$1 dir res start end qrc=0
  series=$(series_of "$series")
  fetch_kernel "$series"
  dir="$RUNS/$series"
  res="$dir/results"
  mkdir -p "$res"
  build_initramfs "$dir/initrd.img"
  say "$series: booting $KPKG $KPKGVER ($KVER) under TCG: ${SMP} vCPUs, ${MEM} MiB, timeout ${TIMEOUT}s; console: $dir/console.log"
  start=$(date +%s.%N)
  # -nodefaults: no VGA, NIC, floppy or CD to emulate; the console is the
  # first serial port, into a file the host follows. 9p "hostroot": the
  # host's / read-only (multidevs=remap: it spans several host file systems,
  # keep their inode numbers apart); 9p "results": the only writable share.
  timeout -k 30 "$TIMEOUT" qemu-system-x86_64 -name "ambit-vm-$series" \
    -accel tcg,thread=multi -cpu max -smp "$SMP" -m "$MEM" \
    -nodefaults -nographic -no-reboot -serial "file:$dir/console.log" -monitor none \
    -kernel "$KROOT/boot/vmlinuz-$KVER" -initrd "$dir/initrd.img" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4" \
    -fsdev "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap" \
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
    -fsdev "local,id=results,path=$res,security_model=none" \
    -device virtio-9p-pci,fsdev=results,mount_tag=results \
    -device virtio-rng-pci \
    > "$dir/qemu.log" 2>&1 < /dev/null &
  QPID=$!
  # Progress: the guest console as it comes, tagged with the kernel.
  touch "$dir/console.log"
  tail --pid="$QPID" -n +1 -f "$dir/console.log" | sed -u "s/\r\$//; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/^/[$series] /" &
  local tailpid=$!
  wait "$QPID" || qrc=$?
  QPID=
  wait "$tailpid" || true
  end=$(date +%s.%N)
  [ "$qrc" = 0 ] || say "$series: qemu exited $qrc$([ "$qrc" = 124 ] && echo " (timeout after ${TIMEOUT}s)"); $(tail -n 3 "$dir/qemu.log" | tr '\n' ' ')"
  {
    echo "series=$series"
    echo "package=$KPKG"
    echo "package_version=$KPKGVER"
    echo "qemu_rc=$qrc"
    awk -v a="$start" -v b="$end" 'BEGIN { printf "wall_seconds=%.1f\n", b - a }'
  } > "$dir/host.txt"
}

for k in "${KLIST[@]}"; do run_kernel "$k"; done

# Summary: the Markdown table on stdout, the JSON in bench/results/. Node
# reads the result files (it is there anyway: the tests need it).
mkdir -p "$REPO/bench/results"
node - "$RUNS" "$REPO/bench/results/vm-test-$STAMP.json" "$TESTS" "$PATTERN" "$SCALE" "$SMP" "$MEM" <<'EOF'
const fs = require('node:fs');
const path = require('node:path');
const [runs, out, tests, pattern, scale, smp, mem] = process.argv.slice(2);
const read = (f) => { try { return fs.readFileSync(f, 'utf8').trim(); } catch { return undefined; } };
const kernels = [];
for (const series of fs.readdirSync(runs).filter((d) => fs.existsSync(path.join(runs, d, 'host.txt')))) {
  const dir = path.join(runs, series);
  const res = path.join(dir, 'results');
  const host = Object.fromEntries(read(path.join(dir, 'host.txt')).split('\n').map((l) => l.split(/=(.*)/s).slice(0, 2)));
  const probeText = read(path.join(res, 'probe.txt'));
  const probeLines = probeText ? probeText.split('\n') : [];
  const files = tests.split(/\s+/).filter(Boolean).map((t) => {
    const tap = read(path.join(res, `${t}.tap`)) ?? '';
    const count = (k) => { const m = new RegExp(`^# ${k} (\\d+)$`, 'm').exec(tap); return m ? Number(m[1]) : null; };
    const rc = read(path.join(res, `${t}.rc`));
    return {
      file: `dist/test/netns/${t}.test.js`, exit: rc === undefined ? null : Number(rc),
      tests: count('tests'), pass: count('pass'), fail: count('fail'), cancelled: count('cancelled'), skipped: count('skipped'),
      seconds: read(path.join(res, `${t}.seconds`)) === undefined ? null : Number(read(path.join(res, `${t}.seconds`))),
      failures: [...tap.matchAll(/^\s*not ok \d+ - (.*)$/gm)].map((m) => m[1]),
    };
  });
  const completed = read(path.join(res, 'status')) === 'complete';
  const probeRc = read(path.join(res, 'probe.rc'));
  const ok = completed && probeRc === '0' && files.every((f) => f.exit === 0 && f.tests > 0 && f.fail === 0 && !f.cancelled);
  kernels.push({
    series, package: host.package, package_version: host.package_version, uname_r: read(path.join(res, 'uname')) ?? null,
    boot_to_init_seconds: read(path.join(res, 'boot-seconds')) === undefined ? null : Number(read(path.join(res, 'boot-seconds'))),
    probe: { exit: probeRc === undefined ? null : Number(probeRc), ok: probeLines.filter((l) => l.startsWith('ok ')).length, failed: probeLines.filter((l) => l.startsWith('FAIL')), lines: probeLines },
    files, completed, qemu_exit: Number(host.qemu_rc), wall_seconds: Number(host.wall_seconds), ok,
  });
}
const result = {
  when: new Date().toISOString(), host_kernel: require('node:os').release(), runs_dir: runs,
  qemu: { accel: 'tcg', cpu: 'max', vcpus: Number(smp), memory_mib: Number(mem) },
  time_scale: Number(scale), test_name_pattern: pattern || null, kernels,
};
fs.writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
const cell = (f) => `${f.file.replace(/^dist\/test\/netns\/|\.test\.js$/g, '')} ${f.pass ?? '?'}/${f.tests ?? '?'}${f.fail ? ` (${f.fail} failed)` : ''} ${f.seconds ?? '?'}s`;
console.log('\n| kernel | uname -r | boot to /init | probe | tests (passed/total, time) | wall | result |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const k of kernels) {
  const probe = k.probe.exit === null ? 'no output' : k.probe.failed.length ? k.probe.failed.join('; ') : `all ${k.probe.ok} ok`;
  const result = k.ok ? 'PASS' : k.completed ? 'FAIL' : `FAIL (guest never reported${k.qemu_exit === 124 ? ': timeout' : ''})`;
  console.log(`| ${k.series} | ${k.uname_r ?? '?'} | ${k.boot_to_init_seconds ?? '?'} s | ${probe} | ${k.files.map(cell).join('; ')} | ${k.wall_seconds} s | ${result} |`);
}
for (const k of kernels) for (const f of k.files) for (const n of f.failures) console.log(`${k.series}: not ok: ${f.file}: ${n}`);
console.log(`\nvm-test: ${out}`);
const passed = kernels.filter((k) => k.ok).length;
console.log(`vm-test: ${passed} of ${kernels.length} kernels passed`);
process.exit(kernels.length > 0 && passed === kernels.length ? 0 : 1);
EOF
