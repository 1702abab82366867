#!/usr/bin/env bash
# RenderCAD image → video → GIF against the appliance (video.php): create_job (an orbit with a hero spin) →
# presign_upload (render.php) → PUT the picture → finalize_job → poll status → download the MP4, then convert it to a
# GIF → poll → download the GIF.
#
#   RENDERCAD_KEY=rendercad_… examples/rendercad-video.sh [PHOTO.jpg]   # default examples/media/photo.jpg
#
# Environment:
#   APPLIANCE_URL  the appliance's address (default http://127.0.0.1:8000)
#   RENDERCAD_KEY  a RenderCAD token: printed by the first `make run`, or
#                  .venv/bin/appliance keys create --user admin --dialect rendercad
#   OUT            where the video and GIF go (default examples/out)
#   POLL_S         seconds between status polls (default 10, the documented interval for videos)
# Needs curl and jq; no network beyond the appliance. Costs 4 tokens (4 s at 720p); the GIF is free.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
URL=${APPLIANCE_URL:-http://127.0.0.1:8000}
OUT=${OUT:-$HERE/out}
PHOTO=${1:-$HERE/media/photo.jpg}
POLL_S=${POLL_S:-10}
: "${RENDERCAD_KEY:?set RENDERCAD_KEY to a RenderCAD token (.venv/bin/appliance keys create --user admin --dialect rendercad)}"
mkdir -p "$OUT"
AUTH="Authorization: Bearer $RENDERCAD_KEY"

wait_for() {  # poll video.php's status of job $1 until it ends; prints the last status
  local status state
  for _ in $(seq 120); do
    status=$(curl -sS "$URL/backend/video.php?action=status&job_id=$1" -H "$AUTH")
    state=$(echo "$status" | jq -r '.status')
    case "$state" in pending|processing|uploading) sleep "$POLL_S" ;; *) break ;; esac
  done
  echo "$status"
}

JOB=$(curl -sS -X POST "$URL/backend/video.php?action=create_job" -H "$AUTH" -H "Content-Type: application/json" \
  -d '{"camera":"orbit","motion":"hero-spin","style":"preserve","duration":4,"resolution":"720p"}')
JOB_ID=$(echo "$JOB" | jq -r '.job_id // empty')
[ -n "$JOB_ID" ] || { echo "create_job refused: $JOB" >&2; exit 1; }
echo "video job $JOB_ID; uploads: $(echo "$JOB" | jq -c '.required_uploads')" >&2
UPLOAD=$(curl -sS -X POST "$URL/backend/render.php?action=presign_upload" -H "$AUTH" \
  -H "Content-Type: application/json" -d "{\"job_id\":\"$JOB_ID\",\"slot\":\"input_main\",\"content_type\":\"image/jpeg\"}")
curl -sS -f -X PUT "$(echo "$UPLOAD" | jq -r '.presigned_url')" -H "Content-Type: image/jpeg" \
  --data-binary "@$PHOTO" > /dev/null
FINAL=$(curl -sS -X POST "$URL/backend/video.php?action=finalize_job" -H "$AUTH" \
  -H "Content-Type: application/json" -d "{\"job_id\":\"$JOB_ID\"}")
[ "$(echo "$FINAL" | jq -r '.success')" = "true" ] || { echo "finalize_job refused: $FINAL" >&2; exit 1; }
echo "tokens: $(echo "$FINAL" | jq -r '.tokens_used')" >&2

VIDEO=$(wait_for "$JOB_ID")
echo "$VIDEO" | jq '{status, video_url, error, video_settings}'
[ "$(echo "$VIDEO" | jq -r '.status')" = "completed" ] || exit 1
VIDEO_URL=$(echo "$VIDEO" | jq -r '.video_url')
curl -sS -f -o "$OUT/rendercad-video.mp4" "$VIDEO_URL"

CONV=$(curl -sS -X POST "$URL/backend/video.php?action=convert" -H "$AUTH" -H "Content-Type: application/json" \
  -d "{\"video_url\":\"$VIDEO_URL\",\"format\":\"gif\"}")
GIF_ID=$(echo "$CONV" | jq -r '.job_id // empty')
[ -n "$GIF_ID" ] || { echo "convert refused: $CONV" >&2; exit 1; }
GIF=$(wait_for "$GIF_ID")
echo "$GIF" | jq '{status, gif_url, width, height, frame_count, size_bytes}'
[ "$(echo "$GIF" | jq -r '.status')" = "completed" ] || exit 1
curl -sS -f -o "$OUT/rendercad-video.gif" "$(echo "$GIF" | jq -r '.gif_url')"
echo "$OUT/rendercad-video.mp4"
echo "$OUT/rendercad-video.gif"
