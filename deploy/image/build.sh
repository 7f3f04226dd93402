#!/usr/bin/env bash
# Builds wslb's container image (Containerfile) with no container registry: `make image` and
# tests/integration/test_image.py run this.
#
#   deploy/image/build.sh [all]        base, wheels, image (each step reused when it can be)
#   deploy/image/build.sh base|wheels|image
#   deploy/image/build.sh buildah ARGS  buildah on this script's storage, e.g.
#                                       deploy/image/build.sh buildah images
#
# 1. base: a Debian bookworm root file system (mmdebstrap, variant essential + python3,
#    python3-venv, ca-certificates; merged /usr, no docs, man pages or locales; the updates and
#    security suites) as build/image/base-bookworm.tar, imported into buildah as
#    localhost/wslb-base:bookworm. Reused while that image exists (else from the tarball while
#    it exists); REBUILD_BASE=1 makes both again (for Debian's security updates).
#    DEBIAN_SOURCES=FILE: a sources.list for mmdebstrap instead of deb.debian.org (a mirror).
# 2. wheels: `pip wheel` of the project with its runtime dependencies (and setuptools, to build
#    it in the image) into build/image/wheels, with the host's Python (WHEEL_PYTHON, default
#    .venv/bin/python), which must be the base's Python minor version (3.11 for bookworm).
#    Reused while pyproject.toml is unchanged.
# 3. image: `buildah bud` of Containerfile with BASE=localhost/wslb-base:bookworm and
#    PIP_ARGS="--no-index --find-links /src" (the wheels only), tagged WSLB_IMAGE (default
#    localhost/wslb:dev) and localhost/wslb:VERSION (pyproject.toml). The image it replaces is
#    removed. Not built again while its inputs are unchanged (REBUILD_IMAGE=1: anyway).
#
# Storage: buildah's own, in build/image/containers/ (--root, --runroot, driver vfs), not the
# machine's /var/lib/containers: no conflict with whatever driver that one was set up with,
# nothing left outside the repository, `rm -rf build/image` removes it all (about 600 MB).
# vfs because it works everywhere (no overlay mounts or fuse needed; but every layer and
# container is a full copy: `buildah from` of the image takes 15-30 s) and RUN steps use chroot
# isolation (no user namespaces, no runc/crun needed), which also gives them the host's network
# and PID namespace. Run as root: mmdebstrap's root mode and chroot isolation need it.
#
# Times on a 2-core machine: base 42 s (mmdebstrap 37 s, import 5 s), wheels 12 s (45 wheels,
# most from pip's cache), image 70-100 s (pip install 25 s, the rest vfs copies and the commit):
# about 2 minutes in all. Again: 0.1 s with the inputs unchanged (pyproject.toml, README.md,
# src/, Containerfile, .dockerignore, the base), 70-100 s after a change of src/.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=$ROOT/build/image # git-ignored; Containerfile reads build/image/wheels
SUITE=bookworm
PYTHON_MINOR=3.11
BASE_TAR=$BUILD_DIR/base-$SUITE.tar
BASE_IMAGE=localhost/wslb-base:$SUITE
WHEELS=$BUILD_DIR/wheels
IMAGE=${WSLB_IMAGE:-localhost/wslb:dev}
WHEEL_PYTHON=${WHEEL_PYTHON:-$ROOT/.venv/bin/python}
STORAGE=$BUILD_DIR/containers

bah() {
    buildah --root "$STORAGE/storage" --runroot "$STORAGE/run" --storage-driver vfs "$@"
}

log() {
    printf 'build.sh: %s\n' "$*" >&2
}

since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'
}

need() {
    command -v "$1" >/dev/null || {
        log "$1 is missing (Debian: apt-get install $2)"
        exit 1
    }
}

base() {
    local t0=$EPOCHREALTIME ctr
    if [ "${REBUILD_BASE:-0}" = 1 ]; then
        rm -f "$BASE_TAR"
        bah rmi "$BASE_IMAGE" >/dev/null 2>&1 || true
    fi
    if bah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base: $BASE_IMAGE reused"
        return
    fi
    if [ ! -s "$BASE_TAR" ]; then
        need mmdebstrap mmdebstrap
        local sources=()
        if [ -n "${DEBIAN_SOURCES:-}" ]; then sources=("$DEBIAN_SOURCES"); fi
        mmdebstrap --quiet --variant=essential --format=tar \
            --include=python3,python3-venv,ca-certificates \
            --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            "$SUITE" "$BASE_TAR.tmp" ${sources[@]+"${sources[@]}"} </dev/null
        mv "$BASE_TAR.tmp" "$BASE_TAR"
        log "base: mmdebstrap $SUITE in $(since "$t0")"
    fi
    local t1=$EPOCHREALTIME
    ctr=$(bah from scratch)
    if ! {
        bah add --quiet "$ctr" "$BASE_TAR" / >/dev/null &&
            bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
                --env LANG=C.UTF-8 --cmd /usr/bin/python3 \
                --label "org.opencontainers.image.title=wslb-base" \
                --label "org.opencontainers.image.description=Debian $SUITE, python3 (mmdebstrap)" \
                "$ctr" &&
            bah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    }; then
        bah rm "$ctr" >/dev/null 2>&1 || true
        exit 1
    fi
    log "base: $BASE_IMAGE imported in $(since "$t1")"
}

wheels() {
    local t0=$EPOCHREALTIME want src
    "$WHEEL_PYTHON" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$PYTHON_MINOR')" || {
        log "WHEEL_PYTHON=$WHEEL_PYTHON is not Python $PYTHON_MINOR, the base's (run make venv)"
        exit 1
    }
    want=$(sha256sum <"$ROOT/pyproject.toml" | cut -d' ' -f1)
    if [ -f "$WHEELS/.pyproject.sha256" ] && [ "$(cat "$WHEELS/.pyproject.sha256")" = "$want" ]; then
        log "wheels: $WHEELS reused"
        return
    fi
    # A clean copy: setuptools' build/ next to a tree it built before can hold stale files.
    src=$BUILD_DIR/src
    rm -rf "$src"
    mkdir -p "$src" "$WHEELS"
    tar -C "$ROOT" -cf - --exclude=__pycache__ --exclude='*.egg-info' --exclude='*.pyc' \
        pyproject.toml README.md src | tar -C "$src" -xf -
    # what is there already first (no index), else PyPI for what is missing
    "$WHEEL_PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$WHEELS" \
        --no-index --find-links "$WHEELS" "$src" 'setuptools>=68' 2>/dev/null ||
        "$WHEEL_PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$WHEELS" \
            --find-links "$WHEELS" "$src" 'setuptools>=68'
    rm -rf "$src"
    echo "$want" >"$WHEELS/.pyproject.sha256"
    log "wheels: $(find "$WHEELS" -name '*.whl' | wc -l) in $WHEELS in $(since "$t0")"
}

# What the image is made of: the files it reads (contents and modes), the base, the wheels.
inputs() {
    {
        tar -C "$ROOT" -cf - --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
            --exclude=__pycache__ --exclude='*.egg-info' --exclude='*.pyc' \
            Containerfile .dockerignore pyproject.toml README.md src
        bah inspect --type image --format '{{.FromImageID}}' "$BASE_IMAGE"
        cat "$WHEELS/.pyproject.sha256"
    } | sha256sum | cut -d' ' -f1
}

image() {
    local t0=$EPOCHREALTIME version revision old new sum
    sum=$(inputs)
    if [ "${REBUILD_IMAGE:-0}" != 1 ] && [ "$(bah inspect --type image --format \
        '{{index .OCIv1.Config.Labels "io.wslb.build.inputs"}}' "$IMAGE" 2>/dev/null)" = "$sum" ]; then
        log "image: $IMAGE reused (same inputs; REBUILD_IMAGE=1 builds it again)"
        return
    fi
    version=$("$WHEEL_PYTHON" -c \
        "import tomllib; print(tomllib.load(open('$ROOT/pyproject.toml', 'rb'))['project']['version'])")
    revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || true)
    old=$(bah inspect --type image --format '{{.FromImageID}}' "$IMAGE" 2>/dev/null || true)
    bah bud --quiet --isolation chroot --pull=never -f "$ROOT/Containerfile" \
        --build-arg "BASE=$BASE_IMAGE" \
        --build-arg "PIP_ARGS=--no-index --find-links /src" \
        --build-arg "VERSION=$version" \
        --build-arg "REVISION=$revision" \
        --label "io.wslb.build.inputs=$sum" \
        -t "$IMAGE" -t "localhost/wslb:$version" "$ROOT" >/dev/null
    new=$(bah inspect --type image --format '{{.FromImageID}}' "$IMAGE")
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        bah rmi "$old" >/dev/null 2>&1 || true
    fi
    log "image: $IMAGE ($(bah images --format '{{.Size}}' "$IMAGE" | head -n 1)) built in $(since "$t0")"
}

case "${1:-all}" in
buildah)
    shift
    need buildah buildah
    exec buildah --root "$STORAGE/storage" --runroot "$STORAGE/run" --storage-driver vfs "$@"
    ;;
all | base | wheels | image) ;;
*)
    log "usage: $0 [all|base|wheels|image|buildah ARGS...]"
    exit 2
    ;;
esac
need buildah buildah
if [ "$(id -u)" != 0 ]; then
    log "needs root (mmdebstrap's root mode, buildah's chroot isolation)"
    exit 1
fi
mkdir -p "$BUILD_DIR"
exec 9>"$BUILD_DIR/.lock"
flock 9 # one build at a time in this directory
T0=$EPOCHREALTIME
case "${1:-all}" in
all)
    base
    wheels
    image
    log "done in $(since "$T0")"
    ;;
*) "$1" ;;
esac
