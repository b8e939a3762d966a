#!/usr/bin/env bash
# Builds Thanos (one binary: `thanos receive`, `thanos query`, ...) from its Go module, for the
# horizontally scalable metrics store of docs/scaling.md: Prometheus remote-writes to a hashring of
# Thanos receivers (series sharded across them) and Grafana reads through `thanos query`. Thanos'
# go.mod carries replace directives, which `go install pkg@version` refuses, so the module's own
# source (from the Go module proxy) is built in place. Cached outside the repo, keyed by version and
# Go version: a second run is a no-op. Prints THANOS=... on stdout.
set -euo pipefail
cache_root="${PAID_TELEMETRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/paid-telemetry}"
version="${THANOS_VERSION:-v0.41.0}"   # see docs/scaling.md for why this release
command -v go >/dev/null || { echo "go is required (Go >= 1.26): install it from your distribution" >&2; exit 1; }

# One build at a time (shared with the other build scripts: two cold builds would starve 2 cores).
mkdir -p "$cache_root"
exec 9>"$cache_root/build.lock"
flock 9

# Built as Thanos' own release build does (.promu.yml): tags netgo and slicelabels. Without
# slicelabels, Prometheus' labels are strings while Thanos casts them to slices, and a receiver
# crashes on its first gRPC answer.
tags="netgo,slicelabels"
dir="$cache_root/thanos/$version-$(go env GOVERSION)-slicelabels"
if [ -x "$dir/thanos" ] && "$dir/thanos" --version >/dev/null 2>&1; then
  echo "thanos: cached $dir" >&2
else
  echo "thanos: cold build of github.com/thanos-io/thanos@$version into $dir" >&2
  start=$(date +%s)
  work="$(mktemp -d)"
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  (cd "$work" && go mod init paid-telemetry/thanos-build >/dev/null 2>&1)
  src="$(cd "$work" && go mod download -json "github.com/thanos-io/thanos@$version" \
         | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -n "$src" ] || { echo "thanos: go mod download of $version failed" >&2; exit 1; }
  cp -r "$src" "$work/src" && chmod -R u+w "$work/src"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  (cd "$work/src" && go build -trimpath -tags "$tags" \
     -ldflags "-X github.com/prometheus/common/version.Version=${version#v}" -o "$dir.tmp/thanos" ./cmd/thanos) >&2
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  echo "thanos: built in $(( $(date +%s) - start ))s" >&2
fi
echo "THANOS=$dir/thanos"
