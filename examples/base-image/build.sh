#!/usr/bin/env bash
# Build the local, registry-free base image `rivetos-base:busybox`.
#
# The image is a tiny root filesystem made from the host's static busybox
# (Debian package `busybox-static`) and imported with `docker import`, so no
# registry is ever contacted. The example RivetOS tree in examples/quickstart
# builds FROM this image.
#
# Idempotent: the root filesystem tarball is built deterministically and its
# sha256 is stored as a label; if an image with the same label already exists
# under the tag, nothing is imported.
#
# Usage: examples/base-image/build.sh            (env IMAGE overrides the tag)
set -euo pipefail

IMAGE="${IMAGE:-rivetos-base:busybox}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
LABEL_KEY="io.rivetos.base.rootfs-sha256"

die() { echo "build.sh: error: $*" >&2; exit 1; }

[ -x "$BUSYBOX" ] || die "$BUSYBOX not found; install Debian's busybox-static (apt-get install busybox-static)"
# A dynamically linked busybox would not run inside an empty root filesystem.
if ! LC_ALL=C "$BUSYBOX" true 2>/dev/null; then die "$BUSYBOX does not run"; fi
if command -v file >/dev/null 2>&1 && ! file -L "$BUSYBOX" | grep -q 'statically linked'; then
    die "$BUSYBOX is not statically linked; install Debian's busybox-static"
fi
command -v docker >/dev/null 2>&1 || die "docker CLI not found"

# Applets the example images use (sh scripts, networking, health checks).
APPLETS="sh ash [ [[ awk basename cat chmod chown cp cut date dirname echo env
expr false grep head hostname id kill ln ls mkdir mktemp mv nc nslookup
pidof printf ps pwd readlink rm rmdir sed seq sleep sort stat tail tee test
timeout touch tr true uname uniq usleep wc wget which whoami xargs"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/rootfs"

mkdir -p "$root"/{bin,usr/bin,usr/local/bin,sbin,etc,tmp,home/rivetos,root,var/tmp,rivet-shared}
cp "$BUSYBOX" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
have="$("$BUSYBOX" --list)"
for a in $APPLETS; do
    grep -qxF -- "$a" <<<"$have" || die "busybox lacks applet '$a'"
    ln -s busybox "$root/bin/$a"
    # Some tools are conventionally looked up under /usr/bin (e.g. #!/usr/bin/env).
    case "$a" in env|awk|wget|nc|timeout|which) ln -s ../../bin/busybox "$root/usr/bin/$a" ;; esac
done

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
rivetos:x:10001:10001:RivetOS:/home/rivetos:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
rivetos:x:10001:
nogroup:x:65534:
EOF
# Look at /etc/hosts before DNS (Docker writes /etc/hosts and /etc/resolv.conf).
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"

# Deterministic tarball: sorted names, fixed mtime, numeric ownership.
tar_opts=(--sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 --format=gnu)
tar -C "$root" "${tar_opts[@]}" --exclude=./home/rivetos --exclude=./rivet-shared -cf "$stage/rootfs.tar" .
# Home and /rivet-shared belong to the unprivileged user.
tar -C "$root" --sort=name --mtime=@0 --numeric-owner --owner=10001 --group=10001 --format=gnu \
    -rf "$stage/rootfs.tar" ./home/rivetos ./rivet-shared
digest="$(sha256sum "$stage/rootfs.tar" | cut -d' ' -f1)"

bbver="$("$BUSYBOX" 2>&1 | head -n1 | cut -d' ' -f1-2 || true)"   # e.g. "BusyBox v1.35.0"
existing="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$IMAGE" 2>/dev/null || true)"
if [ "$existing" = "$digest" ]; then
    echo "build.sh: $IMAGE is up to date (rootfs sha256 $digest)" >&2
else
    echo "build.sh: importing $IMAGE (rootfs sha256 $digest)" >&2
    docker import \
        --change "LABEL $LABEL_KEY=$digest" \
        --change 'LABEL org.opencontainers.image.title=rivetos-base org.opencontainers.image.description="static busybox base for offline RivetOS examples"' \
        --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/sbin' \
        --change 'WORKDIR /' \
        --change 'CMD ["/bin/sh"]' \
        --message "rivetos-base from $bbver" \
        "$stage/rootfs.tar" "$IMAGE" >/dev/null
fi
docker image inspect --format '{{.Id}}' "$IMAGE"
