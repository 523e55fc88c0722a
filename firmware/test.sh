#!/usr/bin/env bash
# Every firmware test on real interpreters: the BME280 reference vectors are what their
# generator writes (CPython, Bosch's double formulas), the Pico firmware under the MicroPython
# Unix port, the ELM11 firmware under Lua 5.1 and 5.3 (with a real Mosquitto for its MQTT
# client), and both against a real `kaiabc run` (tests/e2e). Installs what it needs once
# (Debian packages, a venv under ~/.cache/kaiabc).
set -euo pipefail
cd "$(dirname "$0")"
echo "==> BME280 reference vectors"
python3 tests/reference/bme280_ref.py --check
echo "==> Pico (MicroPython)"
bash tests/pico/run.sh
echo "==> ELM11 (Lua 5.1, 5.3)"
bash tests/elm11/run.sh
echo "==> End to end: both firmwares against kaiabc run"
bash tests/e2e/run.sh
