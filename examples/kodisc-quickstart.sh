#!/usr/bin/env bash
# Kodisc's quick start against the appliance: render kodisc-quickstart.json (a Manim scene), wait, download it.
#
#   KODISC_KEY=kdsc_live_… examples/kodisc-quickstart.sh
#
# Environment:
#   APPLIANCE_URL  the appliance's address (default http://127.0.0.1:8000)
#   KODISC_KEY     a Kodisc key: one of those the first `make run` printed, or a new one from
#                  .venv/bin/appliance keys create --user admin --dialect kodisc
#   OUT            where the outputs go (default examples/out)
#   POLL_S         seconds between status polls (default 2)
# Needs curl and jq; no network beyond the appliance.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
URL=${APPLIANCE_URL:-http://127.0.0.1:8000}
OUT=${OUT:-$HERE/out}
POLL_S=${POLL_S:-2}
: "${KODISC_KEY:?set KODISC_KEY to a Kodisc key (.venv/bin/appliance keys create --user admin --dialect kodisc)}"
mkdir -p "$OUT"

JOB=$(curl -sS "$URL/api/v2/render" -H "Authorization: Bearer $KODISC_KEY" \
  -H "Content-Type: application/json" -d @"$HERE/kodisc-quickstart.json")
JOB_ID=$(echo "$JOB" | jq -r '.jobId // empty')
[ -n "$JOB_ID" ] || { echo "refused: $JOB" >&2; exit 1; }
echo "job $JOB_ID" >&2

while [ "$SECONDS" -lt 600 ]; do  # every POLL_S seconds, at most 10 minutes
  STATUS=$(curl -sS "$URL/api/v2/render/$JOB_ID" -H "Authorization: Bearer $KODISC_KEY")
  STATE=$(echo "$STATUS" | jq -r '.status')
  [ "$STATE" != "queued" ] && [ "$STATE" != "running" ] && break
  sleep "$POLL_S"
done
echo "$STATUS" | jq '{status, creditsCost, durationMs, result, error}'
[ "$STATE" = "completed" ] || exit 1
curl -sS -o "$OUT/kodisc-video.mp4" "$(echo "$STATUS" | jq -r '.result.video')"
curl -sS -o "$OUT/kodisc-thumb.jpg" "$(echo "$STATUS" | jq -r '.result.thumbnail')"
echo "$OUT/kodisc-video.mp4"
