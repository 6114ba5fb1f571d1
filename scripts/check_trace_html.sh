#!/usr/bin/env bash
# scripts/check_trace_html.sh [TRACE_DIR]: opens a trace's thinking.html (from `loopus trace`) in headless
# Chromium, takes a screenshot and checks that the grid rendered: the picture is not blank (many colours,
# enough non-white pixels) and holds the grid's blue cells. Without TRACE_DIR it first traces stories260K
# into a temporary folder with build/bin/loopus. Installs chromium with apt-get when missing.
# Exit 0: rendered; 1: blank or wrong; 2: could not run. The screenshot is left at TRACE_DIR/thinking.png.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${LOOPUS_DATA_DIR:-../shared/data}
DIR=${1:-}
if [ -z "$DIR" ]; then
  DIR=$(mktemp -d /tmp/loopus_trace_html.XXXXXX)
  [ -x build/bin/loopus ] || { echo "check_trace_html: build/bin/loopus missing (cmake --build build --target loopus_cli)" >&2; exit 2; }
  build/bin/loopus trace -m "$DATA/models/stories260K/stories260K.gguf" -p "Once upon a time" -n 8 --loops 6 \
    --encoder-layers 0..0 --decoder-layers 4..4 --gate selective --out "$DIR" >/dev/null
fi
[ -f "$DIR/thinking.html" ] || { echo "check_trace_html: $DIR/thinking.html not found" >&2; exit 2; }
BROWSER=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$BROWSER" ]; then
  bash scripts/bootstrap.sh chromium >/dev/null
  BROWSER=$(command -v chromium)
fi
SHOT="$DIR/thinking.png"
rm -f "$SHOT"
"$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,800 \
  --screenshot="$SHOT" "file://$(cd "$DIR" && pwd)/thinking.html" >/dev/null 2>&1 || true
[ -s "$SHOT" ] || { echo "check_trace_html: $BROWSER wrote no screenshot" >&2; exit 2; }
# Decode the PNG with the standard library only (zlib + the five PNG row filters) and count colours.
python3 - "$SHOT" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w = 8, b"", 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert depth == 8 and ctype in (2, 6), "unexpected PNG format"
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw, stride = zlib.decompress(idat), w * bpp
prev, rows, i = bytearray(stride), [], 0
for _ in range(h):
    f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
    i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = prev[x], prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(line)
    prev = line
colours, ink, blue = set(), 0, 0
for line in rows:
    for x in range(0, stride, bpp):
        r, g, b = line[x], line[x + 1], line[x + 2]
        colours.add((r, g, b))
        if r + g + b < 700: ink += 1
        if b > 150 and b > r + 40: blue += 1
total = w * h
print(f"check_trace_html: {w}x{h} screenshot, {len(colours)} colours, {100 * ink / total:.1f}% non-white, "
      f"{100 * blue / total:.1f}% grid blue")
ok = len(colours) >= 16 and ink / total > 0.05 and blue / total > 0.02
print("check_trace_html: " + ("rendered" if ok else "BLANK or not the grid"))
sys.exit(0 if ok else 1)
PY
