#!/usr/bin/env bash
# Build the integration tests' Kubernetes control plane from source, once per machine:
# kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3) and kwok (sigs.k8s.io/kwok), at the versions pinned by the
# Go modules under tests/controlplane/. The binaries go to a cache directory keyed by
# those versions and are not rebuilt while they are there.
#
#   scripts/build_control_plane.sh           build what is missing, print the bin directory
#   scripts/build_control_plane.sh --print   print the bin directory only
#
# AIOS_CONTROL_PLANE_CACHE overrides the cache root (default ~/.cache/aios-control-plane).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
modules="$here/tests/controlplane"

version_of() { # module file, module path -> pinned version
    awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m && $2 ~ /^v/ { print $2 }' "$1" | head -n1
}
k8s="$(version_of "$modules/kubernetes/go.mod" k8s.io/kubernetes)"
etcd="$(version_of "$modules/etcd/go.mod" go.etcd.io/etcd/server/v3)"
kwok="$(version_of "$modules/kwok/go.mod" sigs.k8s.io/kwok)"
if [ -z "$k8s" ] || [ -z "$etcd" ] || [ -z "$kwok" ]; then
    echo "build_control_plane: cannot read the pinned versions under $modules" >&2
    exit 1
fi
bin="${AIOS_CONTROL_PLANE_CACHE:-$HOME/.cache/aios-control-plane}/k8s-$k8s-etcd-$etcd-kwok-$kwok/bin"

if [ "${1:-}" = "--print" ]; then
    echo "$bin"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "build_control_plane: Go is needed to build the control plane (go.mod pins go $(awk '$1 == "go" {print $2}' "$modules/kubernetes/go.mod"))" >&2
    exit 1
fi

mkdir -p "$bin"
# One build at a time: CI starts one in the background early and `make test-integration`
# waits here for it to finish, then finds every binary built.
exec 9>"$(dirname "$bin")/.build.lock"
flock 9
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

# The Kubernetes binaries report their release (/version), as hack/lib/version.sh stamps it:
# clients such as helm compare it with what a chart needs.
k8s_minor="$(echo "$k8s" | cut -d. -f2)"
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp="$stamp -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    stamp="$stamp -X $pkg.gitTreeState=clean"
done

build() { # module dir, output name, package
    if [ -x "$bin/$2" ]; then
        return
    fi
    local start=$SECONDS
    local ldflags="-s -w"
    if [ "$1" = kubernetes ]; then
        ldflags="$ldflags$stamp"
    fi
    echo "build_control_plane: building $2 ($3)" >&2
    (cd "$modules/$1" && go build -trimpath -ldflags "$ldflags" -o "$bin/$2.tmp" "$3")
    mv "$bin/$2.tmp" "$bin/$2"
    echo "build_control_plane: $2 built in $((SECONDS - start)) s" >&2
}

total=$SECONDS
build etcd etcd .
build kubernetes kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kubernetes kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kubernetes kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kwok kwok sigs.k8s.io/kwok/cmd/kwok

# kwok's own stages, from the pinned module: nodes initialise and keep their lease, pods go
# Ready (a Job's pods Succeeded) and are deleted, PersistentVolumeClaims get volumes.
stages="$(dirname "$bin")/kwok-stages.yaml"
if [ ! -s "$stages" ]; then
    src="$(cd "$modules/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
    for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
        pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete volume/fast/pvc-provision \
        volume/fast/pv-bind volume/fast/pv-delete volume/fast/pvc-delete; do
        echo "---"
        cat "$src/$stage.yaml"
    done >"$stages.tmp"
    mv "$stages.tmp" "$stages"
fi
if [ $((SECONDS - total)) -gt 0 ]; then
    echo "build_control_plane: done in $((SECONDS - total)) s" >&2
fi
echo "$bin"
