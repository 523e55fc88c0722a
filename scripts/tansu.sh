#!/usr/bin/env bash
# Installs (once, cached outside the clone) the tansu Kafka-protocol broker used by the Kafka
# tests, and prints the path of its binary. tansu needs the `dynostore` and `libsql` features for
# its memory and SQLite storage engines; without them it starts with `FeatureNotEnabled`.
set -euo pipefail
version=0.6.0
root="${KAIABC_TOOLS:-$HOME/.cache/kaiabc/tools}/tansu-$version"
bin="$root/bin/tansu"
if [[ ! -x "$bin" ]]; then
  echo "installing tansu $version into $root (one time, about 15-20 minutes)" >&2
  # Its own target dir: tansu's dependency versions must not churn the workspace's shared one.
  CARGO_TARGET_DIR="$root/target" cargo install tansu --version "$version" \
    --features dynostore,libsql --locked --root "$root" >&2
  rm -rf "$root/target"
fi
echo "$bin"
