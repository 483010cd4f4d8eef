#!/usr/bin/env bash
# stvsr upsample (the default: two pairs at once; then one pair, its threads tuned) and ffmpeg
# minterpolate + Lanczos on the same 40 frames at 480x270, beside LOAD busy processes; prints
# output frames/s (start-up included).
# usage: bash tools/cli_under_load.sh LOAD    (needs ffmpeg; writes only to a temporary folder)
set -euo pipefail
load=${1:-0}
stvsr="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/stvsr"
demo="$(cd "$(dirname "$0")/.." && pwd)/stvsr_core/assets/bikes_short.mp4"
tmp=$(mktemp -d); trap 'kill $pids 2>/dev/null || true; rm -rf "$tmp"' EXIT
ffmpeg -v error -i "$demo" -vf "select=between(n\,12\,51),scale=480:270:flags=lanczos" -fps_mode passthrough \
  -c:v libx264 -crf 16 -pix_fmt yuv420p "$tmp/in.mp4"
pids=""; for _ in $(seq 1 "$load"); do python3 -c "while True: pass" & pids="$pids $!"; done; sleep 0.5
fps() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); python3 -c "print(f'{79 / ($e - $s):.2f}')"; }
a=$(fps "$stvsr" upsample "$tmp/in.mp4" -o "$tmp/a.mp4")
b=$(fps "$stvsr" upsample "$tmp/in.mp4" -o "$tmp/b.mp4" --workers 1)
c=$(fps ffmpeg -v error -i "$tmp/in.mp4" -vf "minterpolate=fps=50:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1,scale=960:540:flags=lanczos" "$tmp/c.mp4")
echo "load $load: stvsr (default) $a, stvsr --workers 1 $b, ffmpeg $c output frames/s"
