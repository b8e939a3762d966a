#!/usr/bin/env bash
# Builds Paid's OpenTelemetry Collector (and Jaeger, the trace store, and VictoriaMetrics, the
# metrics store for more than one host: docs/scaling.md) from Go modules.
# Binaries are cached outside the repo, keyed by the manifest's hash / the version: a second run is a no-op.
# Prints the binary paths on stdout as KEY=PATH lines (OTELCOL=..., JAEGER=..., VICTORIAMETRICS=...).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
manifest="$here/otel-collector/builder-config.yaml"
cache_root="${PAID_TELEMETRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/paid-telemetry}"
jaeger_version="${JAEGER_VERSION:-v1.76.0}"
# v1.151.0: the newest single-node release that builds with this machine's Go (1.26); the cluster
# flavour's tags (-cluster) are not served by the Go module proxy.
vm_version="${VICTORIAMETRICS_VERSION:-v1.151.0}"
command -v go >/dev/null || { echo "go is required (Go >= 1.24): install it from your distribution" >&2; exit 1; }

# One build at a time (tests and the stack may call this concurrently).
mkdir -p "$cache_root"
exec 9>"$cache_root/build.lock"
flock 9

release="$(sed -n 's/^  version: *//p' "$manifest" | head -1)"
key="$( (cat "$manifest"; go env GOVERSION) | sha256sum | cut -c1-16)"
col_dir="$cache_root/otelcol/$key"
col_bin="$col_dir/otelcol-paid"
if [ -x "$col_bin" ] && "$col_bin" --version >/dev/null 2>&1; then
  echo "collector: cached $col_bin" >&2
else
  echo "collector: cold build of release v$release into $col_dir" >&2
  start=$(date +%s)
  mkdir -p "$col_dir/tools"
  GOBIN="$col_dir/tools" go install "go.opentelemetry.io/collector/cmd/builder@v$release"
  work="$(mktemp -d)"
  sed "s#^  output_path: .*#  output_path: $work/out#" "$manifest" > "$work/manifest.yaml"
  "$col_dir/tools/builder" --config "$work/manifest.yaml" >&2
  cp "$work/out/otelcol-paid" "$col_bin.tmp" && mv "$col_bin.tmp" "$col_bin"
  rm -rf "$work"
  echo "collector: built in $(( $(date +%s) - start ))s" >&2
fi

jg_dir="$cache_root/jaeger/$jaeger_version-$(go env GOVERSION)"
jg_bin="$jg_dir/jaeger"
if [ -x "$jg_bin" ] && "$jg_bin" version >/dev/null 2>&1; then
  echo "jaeger: cached $jg_bin" >&2
elif [ "${PAID_TELEMETRY_SKIP_JAEGER:-0}" = "1" ]; then
  echo "jaeger: skipped (PAID_TELEMETRY_SKIP_JAEGER=1)" >&2; jg_bin=""
else
  echo "jaeger: cold build of $jaeger_version into $jg_dir" >&2
  start=$(date +%s)
  mkdir -p "$jg_dir"
  work="$(mktemp -d)"
  ( cd "$work" && go mod init paid.local/jaeger-build >/dev/null 2>&1 \
    && go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$jaeger_version" >&2 \
    && go build -o "$jg_bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger >&2 )
  mv "$jg_bin.tmp" "$jg_bin"
  rm -rf "$work"
  echo "jaeger: built in $(( $(date +%s) - start ))s" >&2
fi
vm_dir="$cache_root/victoriametrics/$vm_version-$(go env GOVERSION)"
vm_bin="$vm_dir/victoria-metrics"
if [ -x "$vm_bin" ] && "$vm_bin" -version >/dev/null 2>&1; then
  echo "victoriametrics: cached $vm_bin" >&2
elif [ "${PAID_TELEMETRY_SKIP_VICTORIAMETRICS:-0}" = "1" ]; then
  echo "victoriametrics: skipped (PAID_TELEMETRY_SKIP_VICTORIAMETRICS=1)" >&2; vm_bin=""
else
  echo "victoriametrics: cold build of $vm_version into $vm_dir" >&2
  start=$(date +%s)
  mkdir -p "$vm_dir"
  work="$(mktemp -d)"
  ( cd "$work" && go mod init paid.local/vm-build >/dev/null 2>&1 \
    && go get -tool "github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics@$vm_version" >&2 \
    && CGO_ENABLED=0 go build -o "$vm_bin.tmp" github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics >&2 )
  mv "$vm_bin.tmp" "$vm_bin"
  rm -rf "$work"
  echo "victoriametrics: built in $(( $(date +%s) - start ))s" >&2
fi
echo "OTELCOL=$col_bin"
echo "JAEGER=$jg_bin"
echo "VICTORIAMETRICS=$vm_bin"
