#!/usr/bin/env bash
# Create .venv and install tidesync with everything its tests need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import tidesync"

# The dashboard browser test drives Debian's Chromium through Playwright (never `playwright install`).
if [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q chromium >/dev/null
fi

# The deploy tests (tests/integration/test_deploy_prometheus.py) run Debian's promtool and prometheus on
# their own ports. The package starts its own service on 9090 where it may (systemd, or SysV init without
# a policy-rc.d that forbids it): stop it through its init script and keep it from starting at boot.
if ! command -v promtool >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends prometheus >/dev/null
  systemctl disable prometheus.service >/dev/null 2>&1 || true
  /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi
