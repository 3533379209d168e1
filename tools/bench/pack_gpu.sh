#!/usr/bin/env bash
# pack_gpu.sh — gathers the prebuilt CUDA test/bench binaries and the non-CUDA shared libraries they need into .gpu/
# (ignored by git; carried to the GPU machine, see run_gpu.sh). Usage: tools/bench/pack_gpu.sh [BUILD_DIR]
set -euo pipefail
B=${1:-build-cuda}
rm -rf .gpu && mkdir -p .gpu/bin /tmp/sd3q-pack-libs
[ -f "$B"/bench/libsd3q-cupti-trace.so ] && cp "$B"/bench/libsd3q-cupti-trace.so .gpu/bin/  # run_gpu.sh trace
cp "$B"/tests/test-cuda-ops-gpu "$B"/tests/test-cuda-mmdit-gpu "$B"/bench/bench-cuda-mmdit "$B"/bench/bench-cuda-attention "$B"/bench/bench-pipeline .gpu/bin/
mkdir -p .gpu/vocab  # bench-pipeline's tokenizer files (the GPU machine has no ../shared)
cp ../shared/tokenizers/clip_bpe_simple_vocab_16e6.txt.gz tests/golden/tokenizers/t5_tiny/spiece.model .gpu/vocab/
strip -g .gpu/bin/* 2>/dev/null || true
rm -f /tmp/sd3q-pack-libs/*
for lib in $(ldd .gpu/bin/* | awk '/=>/ {print $3}' | sort -u | grep -vE 'libc\.so|libm\.so|libdl|librt|libpthread|ld-linux|libcublas|libstdc\+\+|libgcc_s|libz\.so'); do
    cp -L "$lib" /tmp/sd3q-pack-libs/
done
tar -cJf .gpu/libs.tar.xz -C /tmp/sd3q-pack-libs .
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
du -sh .gpu/bin/* .gpu/libs.tar.xz
