#!/usr/bin/env bash
# Install what the quickstart and the tests need, on Debian or Ubuntu, in one command:
#
#   scripts/install-prerequisites.sh        (as root, or as a user who may sudo)
#
# - Debian packages: busybox-static (the base image), openssh-server (the SSH tests start
#   their own sshd on loopback), docker-compose (checks rendered compose files), systemd
#   (systemd-analyze verifies rendered units), socat and openssl (TLS and network tests),
#   iproute2 and util-linux (`ip netns`, `unshare`: the tcp:// probe test), etcd-server (the
#   store of the Kubernetes tests' API server), docker-registry (a real registry on loopback);
# - kube-apiserver and kube-controller-manager v1.20.2, built from Debian's kubernetes
#   source package into /opt/rivetctl/kubernetes/bin (scripts/kubernetes/build-apiserver.sh;
#   5-15 minutes the first time): the Kubernetes tests start their own server with them;
# - kubernetes-validate 1.37.0 (pip), which checks rendered Kubernetes manifests;
# - pgserver 0.1.4 (pip): its relocatable PostgreSQL 16 with pgvector goes into the image of
#   the Proxmox tests' container stand-ins (testkit/src/proxmox/standin/image.rs);
# - /run/sshd, sshd's privilege separation directory;
# - the local base image rivetos-base:busybox (examples/base-image/build.sh), so the
#   quickstart builds offline. This step needs a running Docker Engine.
#
# Not installed here: Rust (https://rustup.rs), cargo-nextest, and the Docker Engine itself.
# Idempotent: what is present is left alone; every step says what it did. CI (.ci/run) runs
# this script too.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(busybox-static openssh-server docker-compose systemd socat openssl iproute2 util-linux etcd-server docker-registry runit)
KUBERNETES_VALIDATE=1.37.0
# Where kubernetes-validate goes when the system Python refuses pip installs (PEP 668).
VENV=/opt/rivetctl/kubernetes-validate
PGSERVER=0.1.4
# Where pgserver goes in that case; the testkit looks for its python3 there.
PGSERVER_VENV=/opt/rivetctl/pgserver

say() { echo "install-prerequisites: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ -r /etc/debian_version ] || die "this script supports Debian and Ubuntu (apt); elsewhere install the equivalents of: ${PACKAGES[*]}"
SUDO=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "run as root, or install sudo"
    SUDO=(sudo)
fi

# 1. Debian packages.
missing=()
for package in "${PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    say "packages: all present (${PACKAGES[*]})"
else
    say "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
    say "packages: installed ${missing[*]}"
fi

# 2. kube-apiserver and kube-controller-manager v1.20.2, the Kubernetes tests' API server
#    (testkit/src/apiserver.rs), built from Debian's source package into
#    /opt/rivetctl/kubernetes/bin: 5 to 10 minutes the first time, then "already built".
say "kubernetes: scripts/kubernetes/build-apiserver.sh"
scripts/kubernetes/build-apiserver.sh

# 3. kubernetes-validate.
installed="$(kubernetes-validate --version 2>/dev/null || true)"
if [ "$installed" = "$KUBERNETES_VALIDATE" ]; then
    say "kubernetes-validate: $KUBERNETES_VALIDATE present ($(command -v kubernetes-validate))"
else
    command -v python3 >/dev/null 2>&1 || die "python3 not found (apt-get install python3)"
    managed="$(python3 -c 'import os, sysconfig; print(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))')"
    if [ "$managed" = True ]; then
        # The distribution's Python takes no pip installs: use a virtual environment and put
        # the command on the PATH.
        if ! python3 -c 'import ensurepip' 2>/dev/null; then
            say "kubernetes-validate: installing python3-venv"
            "${SUDO[@]}" apt-get install -y -qq python3-venv >/dev/null
        fi
        say "kubernetes-validate: installing $KUBERNETES_VALIDATE into $VENV (the system Python is externally managed)"
        "${SUDO[@]}" python3 -m venv "$VENV"
        "${SUDO[@]}" "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE"
        "${SUDO[@]}" ln -sf "$VENV/bin/kubernetes-validate" /usr/local/bin/kubernetes-validate
    else
        say "kubernetes-validate: installing $KUBERNETES_VALIDATE with $(command -v python3) -m pip"
        python3 -m pip install -q "kubernetes-validate==$KUBERNETES_VALIDATE"
    fi
    hash -r
    installed="$(kubernetes-validate --version 2>/dev/null || true)"
    [ "$installed" = "$KUBERNETES_VALIDATE" ] || die "kubernetes-validate $KUBERNETES_VALIDATE is not on the PATH after installing it (found: ${installed:-none})"
    say "kubernetes-validate: $KUBERNETES_VALIDATE installed ($(command -v kubernetes-validate))"
fi

# 4. pgserver, for the PostgreSQL of the stand-ins' image.
pgserver_version() { "$1" -c 'import importlib.metadata as m; print(m.version("pgserver"))' 2>/dev/null || true; }
if [ "$(pgserver_version python3)" = "$PGSERVER" ]; then
    say "pgserver: $PGSERVER present ($(command -v python3))"
elif [ "$(pgserver_version "$PGSERVER_VENV/bin/python3")" = "$PGSERVER" ]; then
    say "pgserver: $PGSERVER present ($PGSERVER_VENV)"
else
    command -v python3 >/dev/null 2>&1 || die "python3 not found (apt-get install python3)"
    managed="$(python3 -c 'import os, sysconfig; print(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))')"
    if [ "$managed" = True ]; then
        if ! python3 -c 'import ensurepip' 2>/dev/null; then
            say "pgserver: installing python3-venv"
            "${SUDO[@]}" apt-get install -y -qq python3-venv >/dev/null
        fi
        say "pgserver: installing $PGSERVER into $PGSERVER_VENV (the system Python is externally managed)"
        "${SUDO[@]}" python3 -m venv "$PGSERVER_VENV"
        "${SUDO[@]}" "$PGSERVER_VENV/bin/pip" install -q "pgserver==$PGSERVER"
        python="$PGSERVER_VENV/bin/python3"
    else
        say "pgserver: installing $PGSERVER with $(command -v python3) -m pip"
        python3 -m pip install -q "pgserver==$PGSERVER"
        python=python3
    fi
    [ "$(pgserver_version "$python")" = "$PGSERVER" ] || die "pgserver $PGSERVER is not importable by $python after installing it"
    say "pgserver: $PGSERVER installed ($python)"
fi

# 5. sshd's privilege separation directory (the SSH tests start their own sshd).
if [ -d /run/sshd ]; then
    say "/run/sshd: present"
else
    "${SUDO[@]}" mkdir -p /run/sshd
    say "/run/sshd: created"
fi

# 6. The examples' .env files hold (demo) secrets: private, as rivetctl doctor expects. Git
#    records no mode but the executable bit, so a fresh clone has them 0644.
for env_file in examples/*/.env; do
    [ -f "$env_file" ] || continue
    if [ "$(stat -c %a "$env_file")" != 600 ]; then
        chmod 600 "$env_file"
        say "$env_file: made private (0600)"
    fi
done

# 7. The base image the examples build FROM, on the local engine.
docker version --format 'docker: Engine {{.Server.Version}} (API {{.Server.APIVersion}})' >&2 \
    || die "the Docker Engine is not reachable; start it (and make sure this user may use it), then run this script again"
say "base image: examples/base-image/build.sh"
examples/base-image/build.sh >/dev/null
say "done"
