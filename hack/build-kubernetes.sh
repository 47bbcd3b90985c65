#!/usr/bin/env bash
# Builds the Kubernetes binaries the e2e cluster (TestKubernetes) runs, from
# k8s.io/kubernetes at one version, into a directory keyed by the Kubernetes
# and Go versions. Only what is missing is built: a fresh machine pays about
# 17 minutes on 2 cores once, a prepared one nothing.
#
# `go install k8s.io/kubernetes/cmd/...@version` cannot work: that module's
# go.mod replaces every k8s.io/* staging module (required at v0.0.0) with a
# directory of its own repository. A wrapper module that requires kubernetes
# and replaces each of those with its published v0.N.M tag builds the same code.
#
# Prints the output directory on stdout when done.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
GO_VERSION="$(go env GOVERSION)"
OUT="${K8S_DEPS_DIR:-/var/cache/shoal-deps}/k8s-${K8S_VERSION}-${GO_VERSION}"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

log() { printf '[build-kubernetes] %s\n' "$*" >&2; }

# find_missing lists the binaries not built yet in missing, and prints OUT
# and exits when there are none.
find_missing() {
  missing=()
  for b in "${BINARIES[@]}"; do
    [ -x "$OUT/$b" ] || missing+=("$b")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "$OUT"
    exit 0
  fi
}

find_missing

# v1.37.2 -> staging modules at v0.37.2; major and minor for the version stamp.
ver="${K8S_VERSION#v}"
major="${ver%%.*}"
rest="${ver#*.}"
minor="${rest%%.*}"
staging="v0.${rest}"

mkdir -p "$OUT"
# One build at a time (two install-deps runs would share .src); the other
# waits, then finds the binaries built.
exec 9>"$OUT/.lock"
flock 9
find_missing
src="$OUT/.src"
rm -rf "$src"
mkdir -p "$src"
cd "$src"

log "resolving k8s.io/kubernetes@$K8S_VERSION"
kmod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[ -f "$kmod" ] || { log "no go.mod for k8s.io/kubernetes@$K8S_VERSION"; exit 1; }

{
  echo "module shoal.local/kubernetes-build"
  echo
  echo "go $(sed -n 's/^go \([0-9.]*\)$/\1/p' "$kmod")"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  # Every k8s.io module kubernetes requires at v0.0.0 lives in its staging
  # directory; its published tag is v0.<minor>.<patch>.
  grep -E '^[[:space:]]+k8s\.io/[^ ]+ v0\.0\.0$' "$kmod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
} > go.mod
{
  echo "//go:build tools"
  echo
  echo "package tools"
  echo
  echo "import ("
  for b in "${missing[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$b\""; done
  echo ")"
} > tools.go
log "go mod tidy ($(grep -c '^replace' go.mod) staging modules at $staging)"
go mod tidy >/dev/null 2>&1 || go mod tidy

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=${major} -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean"
# kube-apiserver first: it compiles most of the shared code.
for b in "${missing[@]}"; do
  start=$(date +%s)
  log "go build $b $K8S_VERSION"
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$OUT/.$b.tmp" "k8s.io/kubernetes/cmd/$b"
  mv "$OUT/.$b.tmp" "$OUT/$b"
  log "built $b in $(( $(date +%s) - start )) s"
done
cd /
rm -rf "$src"
echo "$OUT"
