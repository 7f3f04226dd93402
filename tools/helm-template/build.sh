#!/bin/sh
# Builds tools/helm-template into build/helm-template/ (repo root) and prints
# the binary's path. Offline, GOPATH mode, Debian packages only:
#   golang-go, golang-github-masterminds-sprig-dev, golang-gopkg-yaml.v2-dev
# The build is skipped when the binary is newer than main.go.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/build/helm-template"
bin="$out/helm-template"

mkdir -p "$out"

if [ -x "$bin" ] && [ -n "$(find "$bin" -newer "$here/main.go" 2>/dev/null)" ]; then
	echo "$bin"
	exit 0
fi

cd "$root"
GO111MODULE=off \
	GOPATH="${HELM_TEMPLATE_GOPATH:-/usr/share/gocode}" \
	GOCACHE="$out/gocache" \
	GOFLAGS= \
	CGO_ENABLED=0 \
	go build -o "$bin" ./tools/helm-template
echo "$bin"
