#!/usr/bin/env python3
"""Builds greensboro-july-temperature.csv (t_hours,temperature_kelvin) from the TMY3 record of
Greensboro NC (NREL NSRDB station 723170, via pvlib 0.16.1, BSD-3-Clause), July, hourly dry-bulb
temperature. t_hours counts from 01:00 local standard time on July 1 (hour-ending stamps).

Usage: python3 datasets/make_temperature_csv.py ../shared/data/723170TYA.CSV
"""
import csv
import sys
from pathlib import Path

src = Path(sys.argv[1])
out = Path(__file__).with_name("greensboro-july-temperature.csv")
with src.open(newline="") as f:
    rows = list(csv.reader(f))[2:]
july = [r for r in rows if r[0].startswith("07/")]
with out.open("w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["t_hours", "temperature_kelvin"])
    for i, r in enumerate(july):
        w.writerow([i, f"{float(r[31]) + 273.15:.2f}"])
print(f"wrote {len(july)} rows to {out}")
