#!/usr/bin/env bash
# RenderCAD's quick start against the appliance: create_job → presign_upload → PUT → finalize_job → poll status →
# download the finished picture.
#
#   RENDERCAD_KEY=rendercad_… examples/rendercad-quickstart.sh [PHOTO.jpg]   # default examples/media/photo.jpg
#
# Environment:
#   APPLIANCE_URL  the appliance's address (default http://127.0.0.1:8000)
#   RENDERCAD_KEY  a RenderCAD token: printed by the first `make run`, or
#                  .venv/bin/appliance keys create --user admin --dialect rendercad
#   OUT            where the picture goes (default examples/out)
#   POLL_S         seconds between status polls (default 2)
# Needs curl and jq; no network beyond the appliance. Costs 1 token (classic, standard).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
URL=${APPLIANCE_URL:-http://127.0.0.1:8000}
OUT=${OUT:-$HERE/out}
POLL_S=${POLL_S:-2}
PHOTO=${1:-$HERE/media/photo.jpg}
: "${RENDERCAD_KEY:?set RENDERCAD_KEY to a RenderCAD token (.venv/bin/appliance keys create --user admin --dialect rendercad)}"
mkdir -p "$OUT"
AUTH="Authorization: Bearer $RENDERCAD_KEY"

JOB=$(curl -sS -X POST "$URL/backend/render.php?action=create_job" -H "$AUTH" -H "Content-Type: application/json" \
  -d '{"model":"classic","quality":"standard","render_mode":"preserve","background_style":"auto","condition":"auto"}')
JOB_ID=$(echo "$JOB" | jq -r '.job_id // empty')
[ -n "$JOB_ID" ] || { echo "create_job refused: $JOB" >&2; exit 1; }
echo "job $JOB_ID" >&2
UPLOAD=$(curl -sS -X POST "$URL/backend/render.php?action=presign_upload" -H "$AUTH" \
  -H "Content-Type: application/json" -d "{\"job_id\":\"$JOB_ID\",\"slot\":\"input_main\",\"content_type\":\"image/jpeg\"}")
curl -sS -f -X PUT "$(echo "$UPLOAD" | jq -r '.presigned_url')" -H "Content-Type: image/jpeg" \
  --data-binary "@$PHOTO" > /dev/null
RENDER=$(curl -sS -X POST "$URL/backend/render.php?action=finalize_job" -H "$AUTH" \
  -H "Content-Type: application/json" -d "{\"job_id\":\"$JOB_ID\"}")
[ "$(echo "$RENDER" | jq -r '.success')" = "true" ] || { echo "finalize_job refused: $RENDER" >&2; exit 1; }

while [ "$SECONDS" -lt 600 ]; do  # every POLL_S seconds (2 s, the documented interval), at most 10 minutes
  STATUS=$(curl -sS "$URL/backend/render.php?action=status&job_id=$JOB_ID" -H "$AUTH")
  STATE=$(echo "$STATUS" | jq -r '.status')
  [ "$STATE" != "pending" ] && [ "$STATE" != "processing" ] && break
  sleep "$POLL_S"
done
echo "$STATUS" | jq '{status, output_url, asset_url, error_message}'
[ "$STATE" = "completed" ] || exit 1
curl -sS -f -o "$OUT/rendercad-render.jpg" -H "$AUTH" "$(echo "$STATUS" | jq -r '.output_url')"
echo "$OUT/rendercad-render.jpg"
