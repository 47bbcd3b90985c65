#!/usr/bin/env bash
# Installs what the e2e tests, the demo and the benchmarks need, only when missing.
# Idempotent: a second run on a prepared machine does nothing but check.
set -euo pipefail

GOBIN="${GOBIN:-$(go env GOPATH)/bin}"
export GOBIN
CONTAINERD_VERSION=v2.4.2
CRICTL_VERSION=v1.37.0
CRANE_VERSION=v0.22.1
# The OCI distribution-spec conformance suite (a main package: go install gives
# a runnable binary, $GOBIN/conformance). Keep in step with e2e/harness/bins.go.
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
# TestKubernetes: Helm's CLI, and Kubernetes built by hack/build-kubernetes.sh
# (keep both in step with e2e/harness/kube.go).
HELM_VERSION=v3.22.0
export K8S_VERSION=v1.37.2

log() { printf '[install-deps] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  log "must run as root (containerd, apt)"; exit 1
fi

# Debian packages: distribution 2.8 as the upstream registry, nginx as the serving
# baseline, containerd 1.6 for the compatibility tests, iproute2 for namespaces.
need_apt=()
command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
[ -x /usr/bin/containerd ] || need_apt+=(containerd)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# TestKubernetes: etcd for the API server, runc for the kubelet's pods, the
# CNI plugins (bridge, host-local, loopback) and iptables for kube-proxy.
[ -x /usr/bin/etcd ] || need_apt+=(etcd-server)
[ -x /usr/sbin/runc ] || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
command -v conntrack >/dev/null 2>&1 || need_apt+=(conntrack)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Package maintainer scripts must not start daemons on a build machine.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# True when $GOBIN/<bin> exists and was built from module <mod> at <version>
# (go-installed tools do not always print their own version).
have_go_tool() {
  [ -x "$GOBIN/$1" ] && go version -m "$GOBIN/$1" 2>/dev/null | grep -qE "^\s+mod\s+$2\s+$3\s"
}

if ! have_go_tool containerd github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" || [ ! -x "$GOBIN/ctr" ]; then
  log "go install containerd $CONTAINERD_VERSION (about 2 minutes)"
  GOFLAGS=-tags=no_btrfs,no_devmapper,no_zfs go install \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
fi
if ! have_go_tool crictl sigs.k8s.io/cri-tools "$CRICTL_VERSION"; then
  log "go install crictl $CRICTL_VERSION"
  go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
fi
if ! have_go_tool crane github.com/google/go-containerregistry "$CRANE_VERSION"; then
  log "go install crane $CRANE_VERSION"
  go install "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
fi
if ! have_go_tool conformance github.com/opencontainers/distribution-spec/conformance "$CONFORMANCE_VERSION"; then
  log "go install the OCI distribution-spec conformance suite $CONFORMANCE_VERSION"
  go install "github.com/opencontainers/distribution-spec/conformance@$CONFORMANCE_VERSION"
fi
if ! have_go_tool containerd-shim-runc-v2 github.com/containerd/containerd/v2 "$CONTAINERD_VERSION"; then
  log "go install containerd-shim-runc-v2 $CONTAINERD_VERSION"
  go install "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
fi
if ! have_go_tool helm helm.sh/helm/v3 "$HELM_VERSION"; then
  log "go install helm $HELM_VERSION (about 3 minutes)"
  go install -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
# Kubernetes for TestKubernetes: built once per Kubernetes and Go version
# (about 17 minutes on 2 cores), then only checked.
K8S_DIR="$("$(dirname "$0")/build-kubernetes.sh")"
log "ok: containerd=$GOBIN/containerd crictl=$GOBIN/crictl crane=$GOBIN/crane conformance=$GOBIN/conformance registry=$(command -v docker-registry || echo /usr/bin/docker-registry) helm=$GOBIN/helm kubernetes=$K8S_DIR"
