#!/bin/sh
# The guide's wrapper, kept: the app reads its paths from the environment batchdrop sets
# (INPUT_PATH, OUTPUT_PATH, CONFIG_PATH), so an image built from this Dockerfile runs unchanged.
set -eu
if [ -n "${CONFIG_PATH:-}" ]; then
  exec python3 /app/app.py -i "$INPUT_PATH" -o "$OUTPUT_PATH" -c "$CONFIG_PATH"
fi
exec python3 /app/app.py -i "$INPUT_PATH" -o "$OUTPUT_PATH"
