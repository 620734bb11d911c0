#!/usr/bin/env bash
# The most decoding work a file within the default pixel limit can ask: flat images coded as deep as
# the limit lets them (what a crafted all-"keep" file of that depth costs), timed with their peak memory.
#
#   benchmarks/deep_files.sh [WORK_DIR]     (about 10 minutes on 2 cores; prints one line per command)
#
# - 9984x9984 (just under 100,000,000 padded pixels, flat gray but for one pixel) at q2: a 12-layer walk,
#   the ladder's deepest;
# - 4608x4608 at --layers 26 (every layer of the default model): 21.2 MP, counted as 99.7 MP by the
#   pixel limit, which weighs a walk deeper than 12 layers by (layers / 12)^2.
set -euo pipefail
work=${1:-$(mktemp -d)}
python=${PYTHON:-python}
cd "$work"
"$python" -c "
from PIL import Image
flat = Image.new('RGB', (9984, 9984), (128, 128, 128))
flat.putpixel((0, 0), (0, 0, 0))  # one pixel off a plane: an image of smooth blocks alone codes no layer
flat.save('flat100.png')
Image.new('RGB', (4608, 4608), (128, 128, 128)).save('flat21.png')
"
run() { /usr/bin/time -f "$1: %e s, %M KB peak" "$python" -m ddncodec "${@:2}" --force --quiet; }
run "12 layers, 100 MP, encode" encode flat100.png -o q2.ddn -q 2
run "12 layers, 100 MP, decode" decode q2.ddn -o q2.png
run "12 layers, 100 MP, decode --threads 1" decode q2.ddn -o q2.png --threads 1
run "26 layers, 21 MP, encode" encode flat21.png -o l26.ddn --layers 26
run "26 layers, 21 MP, decode" decode l26.ddn -o l26.png
ls -l q2.ddn l26.ddn
