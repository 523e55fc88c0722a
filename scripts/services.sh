#!/usr/bin/env bash
# Installs (once) the servers and tools the tests run for real, from Debian's packages:
# Mosquitto and its clients (the external MQTT broker and a real node), Prometheus's
# promtool (checks /metrics and the alerting rules), Alertmanager's amtool (checks its config),
# and Chromium with its WebDriver (the dashboard's browser test). Quiet when everything is there already.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if ((${#need[@]})); then
  echo "installing ${need[*]} (Debian packages)" >&2
  sudo_() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
  sudo_ apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
