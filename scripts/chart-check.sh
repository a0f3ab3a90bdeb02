#!/usr/bin/env bash
# Checks that the chart of a real violation renders in a browser (issue 17 item 4). Not in CI:
# it needs Chromium.
#
#   scripts/chart-check.sh [SCENARIO BUG [SEEDS]]     default: kv_register stale-read 0..20
#
# 1. builds the release `sim` if it is missing or older than the sources;
# 2. sweeps SEEDS of SCENARIO with the planted BUG and takes the first failing seed;
# 3. writes its chart with `sim replay … --chart`;
# 4. opens the chart in headless Chromium twice: `--dump-dom` (the DOM after the page's
#    script ran) must show the SVG marked `data-rendered` by the script, a lane per node and
#    at least one operation outlined as violating; `--screenshot` must give a non-empty PNG;
# 5. prints the chart's and the screenshot's paths.
#
# Chromium: `chromium` or `chromium-browser` on PATH (Debian: `apt-get install -y chromium`).
# Without it the script says so and exits 3; it never skips silently. Output goes to
# $CHART_OUT (default target/chart-check/). CARGO_TARGET_DIR is honoured.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCENARIO="${1:-kv_register}"
BUG="${2:-stale-read}"
SEEDS="${3:-0..20}"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
SIM="$TARGET/release/sim"
OUT="${CHART_OUT:-$REPO/target/chart-check}"
WINDOW=1600,1000

log() { printf 'chart-check: %s\n' "$*"; }
die() { printf 'chart-check: FAIL: %s\n' "$*" >&2; exit 1; }

CHROMIUM=""
for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then CHROMIUM="$c"; break; fi
done
if [ -z "$CHROMIUM" ]; then
    printf 'chart-check: Chromium is not installed (tried chromium, chromium-browser, google-chrome).\n' >&2
    printf 'chart-check: install it (Debian/Ubuntu: sudo apt-get install -y chromium) and run again.\n' >&2
    exit 3
fi

cd "$REPO"
if [ ! -x "$SIM" ] || [ -n "$(find sim/src scenarios/src engine/src -newer "$SIM" -name '*.rs' -print -quit)" ]; then
    log "building the release sim into $TARGET"
    cargo build --release -p sim
fi
mkdir -p "$OUT"

log "looking for a failing seed: sim run $SCENARIO --bug $BUG --seeds $SEEDS"
set +e
"$SIM" run "$SCENARIO" --bug "$BUG" --seeds "$SEEDS" --jobs 1 > "$OUT/sweep.txt" 2>&1
set -e
SEED="$(sed -n "s/.*replay $SCENARIO --seed \([0-9]*\) .*/\1/p" "$OUT/sweep.txt" | head -n1)"
[ -n "$SEED" ] || die "no failing seed of $SCENARIO --bug $BUG in $SEEDS (see $OUT/sweep.txt)"
log "first failing seed: $SEED"

CHART="$OUT/$SCENARIO-$BUG-seed-$SEED.html"
PNG="$OUT/$SCENARIO-$BUG-seed-$SEED.png"
set +e
"$SIM" replay "$SCENARIO" --seed "$SEED" --bug "$BUG" --chart "$CHART" > "$OUT/replay.txt" 2>&1
code=$?
set -e
[ "$code" = 1 ] || die "replay of seed $SEED exited $code, expected 1 (a safety violation); see $OUT/replay.txt"
grep '^chart: ' "$OUT/replay.txt" || die "replay printed no chart line"
[ -s "$CHART" ] || die "no chart at $CHART"
if grep -Eq '(src|href)="(https?:)?//' "$CHART"; then die "the chart references the network"; fi

# A throw-away profile, so that no user profile or first-run state gets in the way.
PROFILE="$(mktemp -d)"
trap 'rm -rf "$PROFILE"' EXIT
browse() {
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$PROFILE" \
        --window-size="$WINDOW" --virtual-time-budget=5000 "$@" 2>>"$OUT/chromium.log"
}

DOM="$OUT/dom.html"
browse --dump-dom "file://$CHART" > "$DOM" || die "chromium --dump-dom failed (see $OUT/chromium.log)"
grep -q 'id="chart"' "$DOM" || die "the DOM has no chart SVG"
RENDERED="$(sed -n 's/.*data-rendered="\([0-9]*\)".*/\1/p' "$DOM" | head -n1)"
[ -n "$RENDERED" ] && [ "$RENDERED" -gt 0 ] || die "the page's script did not run (no data-rendered on the SVG)"
LANES="$(grep -o 'class="lane-name"' "$DOM" | wc -l)"
[ "$LANES" -ge 2 ] || die "only $LANES lanes in the DOM"
VIOLATING="$(grep -o 'class="op [a-z ]*viol"' "$DOM" | wc -l)"
[ "$VIOLATING" -ge 1 ] || die "no operation outlined as violating"
log "DOM: data-rendered=$RENDERED (elements placed by the script), $LANES lanes, $VIOLATING violating operation(s)"

rm -f "$PNG"
browse --screenshot="$PNG" "file://$CHART" >/dev/null || die "chromium --screenshot failed (see $OUT/chromium.log)"
[ -s "$PNG" ] || die "empty screenshot"
[ "$(head -c 8 "$PNG" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] || die "$PNG is not a PNG"
log "OK"
log "chart:      $CHART ($(wc -c < "$CHART") bytes)"
log "screenshot: $PNG ($(wc -c < "$PNG") bytes)"
