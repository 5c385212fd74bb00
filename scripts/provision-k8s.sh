#!/usr/bin/env bash
# Turns a Debian 12 VM into a kubeadm Kubernetes node running ambit from
# daemonset/overlays/vagrant. Called by the Vagrantfile after
# scripts/install-deps.sh (which already installed clang, libbpf, Node.js
# modules and mounted bpffs):
#
#   provision-k8s.sh init NODE_IP TOKEN               # node-1: control plane, CNI, CA, ambit
#   provision-k8s.sh join NODE_IP CONTROL_PLANE_IP TOKEN
#   provision-k8s.sh demo                             # node-1, once both nodes are up
#
# TOKEN is a kubeadm bootstrap token ([a-z0-9]{6}.[a-z0-9]{16}) that the
# Vagrantfile generates once on the host and hands to both VMs: their
# synced folders are one-way rsync copies, so node-1 cannot pass a join
# command to node-2 through them. node-2 therefore joins with
# --discovery-token-unsafe-skip-ca-verification: the cluster-info it fetches
# is still verified against the token's signature, and both VMs sit on a
# host-only network of your machine.
#
# It cannot run on the development machine (no VMs there): there only
# `bash -n` and shellcheck check it (test/unit/provisioning.test.ts).
# Idempotent: `vagrant provision` runs it again without harm.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned versions. pkgs.k8s.io serves one minor version per repository.
KUBERNETES_MINOR=v1.31
FLANNEL_URL=https://github.com/flannel-io/flannel/releases/download/v0.26.1/kube-flannel.yml
POD_CIDR=10.244.0.0/16 # flannel's default network
PAUSE_IMAGE=registry.k8s.io/pause:3.10
IMAGE=ambit:dev # daemonset/overlays/vagrant
OVERLAY=daemonset/overlays/vagrant
CA_DIR=/root/ambit-ca

log() { echo "provision-k8s: $*"; }
die() { echo "provision-k8s: $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then die "run as root"; fi

# containerd (Debian's), kubeadm/kubelet/kubectl (pkgs.k8s.io), buildah
# (Debian's) to build the image on the node.
install_kubernetes() {
  local node_ip=$1
  swapoff -a
  sed -i '/\sswap\s/ s/^[^#]/#&/' /etc/fstab

  printf 'overlay\nbr_netfilter\n' > /etc/modules-load.d/k8s.conf
  modprobe overlay
  modprobe br_netfilter
  cat > /etc/sysctl.d/99-kubernetes.conf <<'EOF'
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
EOF
  sysctl --system >/dev/null

  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends ca-certificates curl gpg conntrack socat iptables containerd buildah >/dev/null

  mkdir -p /etc/containerd
  if ! grep -qs 'SystemdCgroup = true' /etc/containerd/config.toml; then
    containerd config default > /etc/containerd/config.toml
    # The kubelet (kubeadm's default) uses the systemd cgroup driver.
    sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' /etc/containerd/config.toml
    sed -i "s#sandbox_image = \".*\"#sandbox_image = \"${PAUSE_IMAGE}\"#" /etc/containerd/config.toml
    systemctl restart containerd
  fi

  if [ ! -f /etc/apt/sources.list.d/kubernetes.list ]; then
    mkdir -p /etc/apt/keyrings
    curl -fsSL "https://pkgs.k8s.io/core:/stable:/${KUBERNETES_MINOR}/deb/Release.key" \
      | gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
    echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/${KUBERNETES_MINOR}/deb/ /" \
      > /etc/apt/sources.list.d/kubernetes.list
    apt-get update -qq
  fi
  apt-get install -y -qq --no-install-recommends kubelet kubeadm kubectl kubernetes-cni >/dev/null
  apt-mark hold kubelet kubeadm kubectl >/dev/null

  # VirtualBox gives every VM the same NAT address on the first interface:
  # the node's address is the private-network one.
  echo "KUBELET_EXTRA_ARGS=--node-ip=${node_ip}" > /etc/default/kubelet
  systemctl enable --now kubelet
}

# The image from the repository's Dockerfile, built here and imported into
# containerd's k8s.io namespace (imagePullPolicy: Never in the overlay).
# chroot isolation: RUN steps use the VM's network, no CNI configuration of
# buildah's own next to the kubelet's.
build_image() {
  log "building ${IMAGE} (Dockerfile) with buildah"
  buildah bud --isolation chroot --layers -t "${IMAGE}" -f Dockerfile .
  rm -f /var/tmp/ambit-image.tar
  buildah push "${IMAGE}" "docker-archive:/var/tmp/ambit-image.tar:${IMAGE}"
  ctr -n k8s.io images import /var/tmp/ambit-image.tar
  rm -f /var/tmp/ambit-image.tar
}

kubeconfig_for() {
  local home=$1 owner=$2
  mkdir -p "${home}/.kube"
  cp /etc/kubernetes/admin.conf "${home}/.kube/config"
  chown -R "${owner}" "${home}/.kube"
}

init() {
  local node_ip=$1 token=$2
  install_kubernetes "${node_ip}"
  if [ ! -f /etc/kubernetes/admin.conf ]; then
    kubeadm init --apiserver-advertise-address="${node_ip}" --pod-network-cidr="${POD_CIDR}" \
      --token "${token}" --token-ttl 0
  fi
  kubeconfig_for /root root:root
  if id vagrant >/dev/null 2>&1; then kubeconfig_for /home/vagrant vagrant:vagrant; fi
  export KUBECONFIG=/etc/kubernetes/admin.conf

  # Flannel, told to use the private network (see install_kubernetes). Not
  # verified from the development machine, which cannot reach its URL.
  kubectl apply -f "${FLANNEL_URL}"
  local flannel_args
  flannel_args=$(kubectl -n kube-flannel get ds kube-flannel-ds -o jsonpath='{.spec.template.spec.containers[0].args}')
  if [[ ${flannel_args} != *iface-regex* ]]; then
    kubectl -n kube-flannel patch ds kube-flannel-ds --type json \
      -p '[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--iface-regex=^192\\.168\\.56\\."}]'
  fi
  # Two nodes only: the control-plane node runs workloads too.
  kubectl taint nodes --all node-role.kubernetes.io/control-plane:NoSchedule- 2>/dev/null || true
  kubectl wait --for=condition=Ready "node/$(hostname)" --timeout=300s

  build_image

  # The CA (see daemonset/README.md), created once: the ambit CLI from this
  # checkout (install-deps.sh ran npm ci; `make build` compiles it).
  make build
  if ! kubectl -n ambit-system get secret ambit-ca >/dev/null 2>&1; then
    rm -rf "${CA_DIR}"
    node dist/src/cli/main.js ca init --dir "${CA_DIR}"
    kubectl create namespace ambit-system --dry-run=client -o yaml | kubectl apply -f -
    kubectl -n ambit-system create secret generic ambit-ca --from-file="${CA_DIR}/"
    kubectl -n ambit-system create configmap ambit-ca-root --from-file=root-cert.pem="${CA_DIR}/root-cert.pem"
  fi

  kubectl apply -k "${OVERLAY}"
  kubectl -n ambit-system rollout status deployment/ambit-control-plane --timeout=300s
  kubectl -n ambit-system rollout status daemonset/ambit-node --timeout=300s
  log "node-1 ready; after node-2: vagrant provision node-1 --provision-with demo"
}

join() {
  local node_ip=$1 control_plane_ip=$2 token=$3
  install_kubernetes "${node_ip}"
  if [ ! -f /etc/kubernetes/kubelet.conf ]; then
    kubeadm join "${control_plane_ip}:6443" --token "${token}" --discovery-token-unsafe-skip-ca-verification
  fi
  build_image
  log "node-2 joined; the DaemonSet starts ambit-node here once ${IMAGE} is imported"
}

# Two pods of the image already on both nodes (no pulls): a server on one
# node, a client on the other, in a namespace labelled ambit.dev/mode=ambient,
# and one HTTP request between them. The image has no curl; Node's fetch is
# the client.
demo() {
  export KUBECONFIG=/etc/kubernetes/admin.conf
  kubectl -n ambit-system rollout status daemonset/ambit-node --timeout=300s
  kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
  kubectl label namespace demo ambit.dev/mode=ambient --overwrite
  local client_node server_node
  client_node=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')
  server_node=$(kubectl get nodes -o jsonpath='{.items[1].metadata.name}')
  kubectl -n demo apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: { name: server, labels: { app: server } }
spec:
  nodeName: ${server_node}
  containers:
    - name: server
      image: ${IMAGE}
      imagePullPolicy: Never
      command: [node, -e, "require('http').createServer((q, s) => s.end('hello from ' + process.env.HOSTNAME + ', you are ' + q.socket.remoteAddress + '\\\\n')).listen(8080)"]
      ports: [{ containerPort: 8080 }]
---
apiVersion: v1
kind: Pod
metadata: { name: client, labels: { app: client } }
spec:
  nodeName: ${client_node}
  containers:
    - name: client
      image: ${IMAGE}
      imagePullPolicy: Never
      command: [node, -e, "setInterval(() => {}, 1 << 30)"]
EOF
  kubectl -n demo wait --for=condition=Ready pod/server pod/client --timeout=180s
  local server_ip
  server_ip=$(kubectl -n demo get pod server -o jsonpath='{.status.podIP}')
  log "client (${client_node}) → server ${server_ip}:8080 (${server_node})"
  kubectl -n demo exec client -- node -e "
    fetch('http://${server_ip}:8080/').then(async (r) => { process.stdout.write(r.status + ' ' + await r.text()); process.exit(r.ok ? 0 : 1); },
      (e) => { console.error(e.cause?.message ?? e.message); process.exit(1); })"
  log "access log of the node agents (the same conn_id on both sides):"
  kubectl -n ambit-system logs -l app.kubernetes.io/name=ambit-node --prefix --tail=50 | grep conn_id | tail -n 4 || true
}

case "${1:-}" in
  init) [ $# -eq 3 ] || die "usage: $0 init NODE_IP TOKEN"; init "$2" "$3" ;;
  join) [ $# -eq 4 ] || die "usage: $0 join NODE_IP CONTROL_PLANE_IP TOKEN"; join "$2" "$3" "$4" ;;
  demo) demo ;;
  *) die "usage: $0 init NODE_IP TOKEN | join NODE_IP CONTROL_PLANE_IP TOKEN | demo" ;;
esac
