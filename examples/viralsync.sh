#!/usr/bin/env bash
# A ViralSync render against the appliance: POST a Movie JSON body, follow the job, download the video.
#
#   VIRALSYNC_KEY=vs_prod_… examples/viralsync.sh                          # viralsync-minimal.json (text only)
#   VIRALSYNC_KEY=vs_prod_… examples/viralsync.sh examples/viralsync-media.json   # video, audio, image, text
#
# viralsync-media.json names its media by bare path (clip.mp4, music.m4a, logo.png): the appliance reads those
# from its assets_dir only, so start it with that pointing here:  APPLIANCE_ASSETS_DIR=$PWD/examples/media make run
# (or copy examples/media/* into the assets_dir it has; the default is ./assets).
#
# Environment:
#   APPLIANCE_URL  the appliance's address (default http://127.0.0.1:8000)
#   VIRALSYNC_KEY  a ViralSync key: printed by the first `make run`, or
#                  .venv/bin/appliance keys create --user admin --dialect viralsync
#   OUT            where the video goes (default examples/out)
#   POLL_S         seconds between status polls (default 2)
# Needs curl and jq; no network beyond the appliance.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
URL=${APPLIANCE_URL:-http://127.0.0.1:8000}
OUT=${OUT:-$HERE/out}
POLL_S=${POLL_S:-2}
BODY=${1:-$HERE/viralsync-minimal.json}
: "${VIRALSYNC_KEY:?set VIRALSYNC_KEY to a ViralSync key (.venv/bin/appliance keys create --user admin --dialect viralsync)}"
mkdir -p "$OUT"

JOB=$(curl -sS -X POST "$URL/v1/render/jobs" -H "x-api-key: $VIRALSYNC_KEY" \
  -H "Content-Type: application/json" -d @"$BODY")
JOB_ID=$(echo "$JOB" | jq -r '.jobId // empty')
[ -n "$JOB_ID" ] || { echo "refused: $JOB" >&2; exit 1; }
echo "job $JOB_ID" >&2

while [ "$SECONDS" -lt 600 ]; do  # every POLL_S seconds, at most 10 minutes
  STATUS=$(curl -sS "$URL/v1/jobs/$JOB_ID" -H "x-api-key: $VIRALSYNC_KEY")
  STATE=$(echo "$STATUS" | jq -r '.status')
  case "$STATE" in done|failed|cancelled) break ;; esac
  sleep "$POLL_S"
done
echo "$STATUS" | jq '{status, error, outputUrl, mediaData}'
[ "$STATE" = "done" ] || exit 1
NAME=$(basename "$BODY" .json)
curl -sS -o "$OUT/$NAME.mp4" "$(echo "$STATUS" | jq -r '.outputUrl')"
echo "$OUT/$NAME.mp4"
