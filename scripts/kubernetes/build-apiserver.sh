#!/usr/bin/env bash
# Build the Kubernetes tests' API server: kube-apiserver and kube-controller-manager v1.20.2,
# compiled offline from Debian bookworm's `kubernetes` source package with Debian's Go 1.19.
#
#   scripts/kubernetes/build-apiserver.sh     (as root, or as a user who may sudo)
#
# Why this source: it is the only Kubernetes whose full tree, vendor/ included, is in Debian's
# archive, so the build needs no network but the Debian mirror. testkit/src/apiserver.rs runs
# the binaries (with Debian's etcd-server) on loopback, one server per test.
#
# - Installs into ${RIVET_K8S_DIR:-/opt/rivetctl/kubernetes}/bin, which is where the testkit
#   looks unless RIVET_K8S_BIN says otherwise.
# - Keeps everything it downloads and builds in $RIVET_K8S_DIR/build: the source package, the
#   unpacked tree, Go's build cache (Kubernetes' hack/lib/golang.sh puts it in the tree, under
#   _output/local/go/cache) and the reflect2 package. A second run (after an interrupted build,
#   or with bin/ deleted) downloads nothing again and recompiles only what changed. CI runs it
#   cold: 5 to 10 minutes on 2 cores, about 1.5 GB of disk.
# - Idempotent: "already built" when both binaries exist and kube-apiserver says v1.20.2.
# - apt steps (the deb-src source, golang-go, make, rsync) run with sudo when not root; the
#   build itself runs as the calling user.
set -euo pipefail

K8S_DIR=${RIVET_K8S_DIR:-/opt/rivetctl/kubernetes}
BIN=$K8S_DIR/bin
BUILD=$K8S_DIR/build
VERSION=v1.20.2
# Debian's version of the source package: upstream v1.20.2 (the "1.20.5+really" is Debian's).
SOURCE_VERSION=1.20.5+really1.20.2
ORIG_TARBALL=kubernetes_${SOURCE_VERSION}.orig.tar.gz
TREE=$BUILD/kubernetes-1.20.2
BUILD_PACKAGES=(golang-go make rsync)
DEB_SRC_LIST=/etc/apt/sources.list.d/rivetctl-bookworm-src.sources
ARCHIVE_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

say() { echo "build-apiserver: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

built() {
    [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] &&
        "$BIN/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes $VERSION"
}

if built; then
    say "already built: $BIN (kube-apiserver and kube-controller-manager $VERSION)"
    exit 0
fi

[ -r /etc/debian_version ] || die "this script needs Debian (apt and Debian's kubernetes source package)"
SUDO=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "run as root, or install sudo"
    SUDO=(sudo)
fi

# $K8S_DIR belongs to the calling user, so that Go does not build as root through sudo.
if ! mkdir -p "$BIN" "$BUILD" 2>/dev/null || [ ! -w "$BIN" ] || [ ! -w "$BUILD" ]; then
    say "creating $K8S_DIR (owned by $(id -un))"
    "${SUDO[@]}" install -d -o "$(id -u)" -g "$(id -g)" "$K8S_DIR" "$BIN" "$BUILD"
fi

# One build at a time: a second run waits for the first, then finds the binaries.
exec 9>"$BUILD/lock"
if ! flock -n 9; then
    say "another build holds $BUILD/lock; waiting for it"
    flock 9
    if built; then
        say "already built (by the other run): $BIN"
        exit 0
    fi
fi

# 1. The source package comes from bookworm's deb-src, which Debian images do not enable.
if apt-cache showsrc kubernetes 2>/dev/null | grep -q "^Version: ${SOURCE_VERSION}-"; then
    say "deb-src: kubernetes $SOURCE_VERSION is known to apt"
else
    [ -r "$ARCHIVE_KEYRING" ] || die "$ARCHIVE_KEYRING not found (apt-get install debian-archive-keyring)"
    say "deb-src: adding bookworm's source packages ($DEB_SRC_LIST)"
    "${SUDO[@]}" tee "$DEB_SRC_LIST" >/dev/null <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: $ARCHIVE_KEYRING
EOF
    "${SUDO[@]}" apt-get update -qq
    apt-cache showsrc kubernetes 2>/dev/null | grep -q "^Version: ${SOURCE_VERSION}-" ||
        die "apt knows no kubernetes source package $SOURCE_VERSION even with $DEB_SRC_LIST (see: apt-cache showsrc kubernetes)"
fi

# 2. Build tools: only what is missing, so nothing already present gets upgraded.
missing=()
for package in "${BUILD_PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -ne 0 ]; then
    say "packages: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
go_version="$(go version)"
case "$go_version" in
*" go1.19"*) say "go: $go_version" ;;
*) say "warning: $go_version; this build was measured with Debian bookworm's Go 1.19 only" ;;
esac

# 3. The source: the upstream tree with vendor/ (the Debian packaging itself is not used).
cd "$BUILD"
if [ -f "$ORIG_TARBALL" ]; then
    say "source: $BUILD/$ORIG_TARBALL (downloaded before)"
else
    say "source: downloading kubernetes/bookworm (about 30 MB)"
    apt-get source -qq --download-only kubernetes/bookworm >/dev/null
    [ -f "$ORIG_TARBALL" ] || die "apt-get source did not produce $BUILD/$ORIG_TARBALL"
fi
if [ ! -d "$TREE" ]; then
    say "source: unpacking into $TREE"
    rm -rf "$TREE.partial"
    mkdir "$TREE.partial"
    tar -xzf "$ORIG_TARBALL" -C "$TREE.partial" --strip-components=1
    mv "$TREE.partial" "$TREE"
fi

# 4. The reflect2 patch. Kubernetes 1.20 vendors github.com/modern-go/reflect2 v1.0.1, which
#    reads Go runtime internals that changed in Go 1.18: built with Debian's Go 1.19, the
#    apiserver panics in reflect2.(*frozenConfig).Type2 / UnsafeMapType.Key whenever
#    json-iterator encodes a map, e.g. on every PATCH ("apiserver panic'd on PATCH ...", the
#    client sees HTTP/2 INTERNAL_ERROR). reflect2 1.0.2 (go_above_118.go) fixes that without an
#    API change, and Debian ships its sources: swap them into vendor/.
REFLECT2=$TREE/vendor/github.com/modern-go/reflect2
if [ -f "$REFLECT2/go_above_118.go" ]; then
    say "reflect2: vendor/ already has 1.0.2"
else
    mkdir -p "$BUILD/reflect2"
    (cd "$BUILD/reflect2" && { ls golang-github-modern-go-reflect2-dev_*.deb >/dev/null 2>&1 ||
        apt-get download -qq golang-github-modern-go-reflect2-dev; })
    rm -rf "$BUILD/reflect2/x"
    dpkg-deb -x "$BUILD"/reflect2/golang-github-modern-go-reflect2-dev_*.deb "$BUILD/reflect2/x"
    NEW=$BUILD/reflect2/x/usr/share/gocode/src/github.com/modern-go/reflect2
    [ -f "$NEW/go_above_118.go" ] || die "Debian's golang-github-modern-go-reflect2-dev has no go_above_118.go in $NEW: it is older than 1.0.2"
    rm -f "$REFLECT2"/*.go "$REFLECT2"/*.s
    cp "$NEW"/*.go "$NEW"/*.s "$REFLECT2/"
    say "reflect2: vendor/ patched with Debian's $(basename "$BUILD"/reflect2/*.deb)"
fi

# 5. Build (offline: vendor/ only, no module proxy) and install.
say "make: kube-apiserver and kube-controller-manager (5 to 10 minutes cold; log $BUILD/make.log)"
cd "$TREE"
export GOFLAGS=-mod=vendor GOPROXY=off GO111MODULE=on GOCACHE=$BUILD/gocache
started=$SECONDS
if ! nice -n 19 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$BUILD/make.log" 2>&1; then
    tail -n 30 "$BUILD/make.log" >&2
    die "make failed (full log: $BUILD/make.log); running this script again resumes the build"
fi
say "make: done in $((SECONDS - started)) s"
for binary in kube-apiserver kube-controller-manager; do
    install -m 0755 "_output/bin/$binary" "$BIN/.$binary.new"
    mv -f "$BIN/.$binary.new" "$BIN/$binary"
done
built || die "$BIN/kube-apiserver --version does not say Kubernetes $VERSION: $("$BIN/kube-apiserver" --version 2>&1 || true)"
say "installed: $BIN/kube-apiserver, $BIN/kube-controller-manager ($VERSION)"
