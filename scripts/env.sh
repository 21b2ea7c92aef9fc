# Sourced by scripts: where cargo builds. A target folder outside the clone
# lets fresh clones (CI) reuse earlier builds; the full dependency set takes
# about 14 minutes to build cold on two cores.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hexroad/target}"
export HEXROAD_BIN="$CARGO_TARGET_DIR/debug/hexroad"
