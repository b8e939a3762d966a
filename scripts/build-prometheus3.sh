#!/usr/bin/env bash
# Builds Prometheus 3 (prometheus + promtool) from its Go modules, so the tests run the repository's
# rules on the Prometheus major docker-compose ships as well as on the Debian 2.42 the other tests
# use. Prometheus 3.x is tagged v0.3XX.Y as a Go module (3.16.0 = v0.316.0); no web UI assets are
# built in (the tests only use the API). Cached outside the repo, keyed by version and Go version:
# a second run is a no-op. Prints PROMETHEUS3=... and PROMTOOL3=... lines on stdout.
set -euo pipefail
cache_root="${PAID_TELEMETRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/paid-telemetry}"
version="${PROMETHEUS3_VERSION:-v0.316.0}"
command -v go >/dev/null || { echo "go is required (Go >= 1.24): install it from your distribution" >&2; exit 1; }

# One build at a time (shared with scripts/build-collector.sh: two cold builds would starve 2 cores).
mkdir -p "$cache_root"
exec 9>"$cache_root/build.lock"
flock 9

dir="$cache_root/prometheus3/$version-$(go env GOVERSION)"
if [ -x "$dir/prometheus" ] && [ -x "$dir/promtool" ] && "$dir/promtool" --version >/dev/null 2>&1; then
  echo "prometheus3: cached $dir" >&2
else
  echo "prometheus3: cold build of github.com/prometheus/prometheus@$version into $dir" >&2
  start=$(date +%s)
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  GOBIN="$dir.tmp" go install \
    "github.com/prometheus/prometheus/cmd/prometheus@$version" \
    "github.com/prometheus/prometheus/cmd/promtool@$version" >&2
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  echo "prometheus3: built in $(( $(date +%s) - start ))s" >&2
fi
echo "PROMETHEUS3=$dir/prometheus"
echo "PROMTOOL3=$dir/promtool"
