#!/usr/bin/env bash
# Regenerate the committed benchmark reports: benchmarks/results/{kodak,mcmaster}/
# (report.md, results.json, rd.png) for the default model, or the model passed on, and
# benchmarks/results/kodak-effort2/ (the encoder at --effort 2 against the Pillow codecs).
#
#   benchmarks/run_all.sh DATASETS_ROOT [bench options, e.g. --model NAME --threads 2]
#
# DATASETS_ROOT holds kodak/ and mcmaster/. Published curves are overlaid on Kodak only.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 DATASETS_ROOT [bench options]" >&2
    exit 1
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
root=$(realpath --relative-to="$repo" "$1")  # reports name the datasets relative to the repo
shift
cd "$repo"
for dataset in kodak mcmaster; do
    start=$(date +%s)
    "${PYTHON:-python}" -m ddncodec bench "$root/$dataset" --out "benchmarks/results/$dataset" "$@"
    echo "$dataset: $(($(date +%s) - start)) s" >&2
done
start=$(date +%s)
"${PYTHON:-python}" -m ddncodec bench "$root/kodak" --out benchmarks/results/kodak-effort2 --effort 2 \
    --codecs ddncodec,jpeg,webp,avif,jxl "$@"
echo "kodak, effort 2: $(($(date +%s) - start)) s" >&2
