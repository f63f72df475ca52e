#!/usr/bin/env bash
# The monitoring check (`just monitoring-check`, and a step of .ci/run): proves the dashboards
# and alert rules against a real Prometheus.
#
# 1. Installs Debian's prometheus package if prometheus or promtool is missing, without
#    letting it start the system service (which would take port 9090).
# 2. Runs tests/monitoring_check.rs: leadflow (serve and a worker) under a mixed load, a
#    private Prometheus scraping both every second, every panel's PromQL evaluated through
#    Prometheus's HTTP API, and the alert rules checked and unit-tested with promtool.
#
# Usage: bash dashboards/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export SQLX_OFFLINE=true

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "monitoring check: installing Debian's prometheus package"
  if [ "$(id -u)" -ne 0 ]; then
    echo "monitoring check: prometheus is missing; run as root, or: apt-get install prometheus" >&2
    exit 1
  fi
  # invoke-rc.d and deb-systemd-invoke ask policy-rc.d whether to start services; 101 means
  # "no". Only a policy this script put in place is removed again.
  policy=/usr/sbin/policy-rc.d
  own_policy=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=true
  fi
  trap '[ "$own_policy" = true ] && rm -f "$policy"' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

prometheus --version 2>&1 | head -n 1
cargo test --locked --test monitoring_check -- --ignored --nocapture
