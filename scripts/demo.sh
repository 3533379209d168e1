#!/usr/bin/env bash
# The README's demo: builds sd3q (installing missing Debian packages when run as root), generates a handful of images
# from varied prompts with the embedded tiny model (models/tiny-sd3) on the CPU, scores how well they follow their
# prompts, and says where they are. Usage: scripts/demo.sh [output folder, default out/demo]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs" --target sd3q_cli >/dev/null
out=${1:-out/demo}
mkdir -p "$out"
prompts=(
    "two small red circles in the top left on a blue background"
    "a large yellow star in the center on a black background"
    "three medium white squares in the bottom right on a purple background"
    "a medium green triangle in the top right on a gray background"
    "two large orange crosses in the bottom left on a white background"
    "a small purple circle in the center on a yellow background"
)
start=$(date +%s%N)
for i in "${!prompts[@]}"; do
    build/sd3q generate --model models/tiny-sd3 --prompt "${prompts[$i]}" --cfg 5 --seed "$i" --output "$out/demo-$i.png" 2>/dev/null
    echo "  ${prompts[$i]}"
done
end=$(date +%s%N)
echo
build/sd3q adherence "$out"/demo-*.png | tail -n 1
ms=$(( (end - start) / 1000000 ))
printf '\n%d images (128×128, 28 steps, CFG 5) in %d.%01d s; they are in %s/\n' "${#prompts[@]}" $((ms / 1000)) $((ms % 1000 / 100)) "$out"
