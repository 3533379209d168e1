#!/usr/bin/env bash
# run_gpu.sh — one call on a GPU machine: the CUDA tests, the sd3q GPU benchmark and the PyTorch reference, in one
# process tree on the same card, full logs under $OUT and a short summary printed last.
#
# The binaries come prebuilt (the GPU machine has no OpenBLAS/cJSON/utf8proc development packages): build here with
#   cmake -S . -B build-cuda -DSD3Q_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a && cmake --build build-cuda -j
#   tools/bench/pack_gpu.sh          # → .gpu/bin/* and .gpu/libs.tar.xz (the shared libraries they need)
# then, on the GPU machine, from the repository root: tools/bench/run_gpu.sh [ops] [mmdit] [bench] [torch] [nocompile]
# [lowmem] [ncu] [ncustep] [notune] [nofuse] [nolanes] [ab] [ltcand] [trace] [script] [clocks] [attn] [bounds] (no argument: the first four; MMDIT_ONLY="sampling pipeline" limits mmdit
# to those parts; BENCH_ARGS adds bench-cuda-mmdit options). lowmem: one whole SD3-Medium-shaped 1024² image (28 steps,
# fp16 T5-XXL, random weights) with the low_memory policy and entirely resident, reporting device memory
# (bench-pipeline). ncu: Nsight Compute's throughput, occupancy and warp-stall sections for one launch of each Hopper
# attention kernel at 1024². notune / nofuse / nolanes: the 1024² (and 512²) step with SD3Q_CUDA_NO_TUNE / _NO_FUSE /
# _NO_LANES set, for an A/B in one call. ab: the 512² and 1024² steps of $G/bin/bench-cuda-mmdit-base (a build of another
# commit, copied there by hand) and of this build, alternating, twice. clocks: the SM clock, power draw and clock-event
# reasons (nvidia-smi, every 100 ms) during 300 steps at 1024². attn: bench-cuda-attention with ATTN_ARGS (attention
# alone for head counts and variants, e.g. ATTN_ARGS="--heads 22,23,24 --variants 14,18"). ncustep: every kernel of one
# 1024² step under Nsight Compute (one at a time, locked clocks), summed by kind (tools/bench/ncu_step.py). ltcand: the
# steps with 6 and 16 timed cuBLASLt candidates per shape, alternating. trace: kernel timelines of 1024² steps (CUPTI,
# tools/bench/cupti_trace.c and trace_step.py), with two queues and one. script: bash $SCRIPT (a one-off experiment,
# carried in $G) with the libraries set up and $G exported. bounds: the
# step's products and attention through PyTorch's best kernels on this card, summed (tools/bench/torch_bounds.py).
# The binaries may also come as $G/bins.tar.xz (bin/ packed with xz: a third of the size), unpacked here first.
set -u
OUT=${OUT:-/tmp/sd3q-out}
G=${G:-.gpu}
mkdir -p "$OUT" /tmp/sd3q-libs
[ -f "$G/bins.tar.xz" ] && tar -xJf "$G/bins.tar.xz" -C "$G"  # first: the line below reads a binary
# the tests find their fixtures under the source folder compiled into them; elsewhere, point that path here
src=$(grep -a -o -m1 "/[[:alnum:]/._-]*/tests/golden/mmdit" "$G/bin/test-cuda-mmdit-gpu" 2>/dev/null | head -n1 | sed "s,/tests/golden/mmdit$,,")
[ -n "$src" ] && [ ! -e "$src/tests/golden" ] && mkdir -p "$(dirname "$src")" && ln -sfn "$PWD" "$src"
steps="${*:-ops mmdit bench torch}"
t0=$(date +%s)
tar -xJf "$G/libs.tar.xz" -C /tmp/sd3q-libs 2>/dev/null
cub=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && cub="$cub:$d"; done
pycub=$(python3 -c 'import glob, os, site; print(":".join(sorted({os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/**/libcublasLt.so*", recursive=True)})))' 2>/dev/null)
export LD_LIBRARY_PATH="/tmp/sd3q-libs${cub}${pycub:+:$pycub}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export G OUT
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    for b in "$G"/bin/*; do ldd "$b" | grep -q "not found" && { echo "$b:"; ldd "$b" | grep "not found"; }; done
    command -v cuobjdump >/dev/null && for k in HMMA LDSM LDGSTS; do
        echo "$k in test-cuda-ops-gpu: $(cuobjdump --dump-sass "$G/bin/test-cuda-ops-gpu" 2>/dev/null | grep -c "$k")"
    done
} > "$OUT/env.txt" 2>&1
summary=()
run() {  # name timeout command...
    local name=$1 to=$2
    shift 2
    local s=$(date +%s)
    timeout "$to" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    summary+=("$(printf '%-14s rc=%-3s %4ss' "$name" "$rc" "$(( $(date +%s) - s ))")")
    return $rc
}
for st in $steps; do
    case $st in
        ops)
            if ! run ops 300 "$G/bin/test-cuda-ops-gpu"; then  # isolate: each group alone, then memcheck the failing ones
                for t in $("$G/bin/test-cuda-ops-gpu" --list); do
                    run "ops-$t" 120 "$G/bin/test-cuda-ops-gpu" --only "$t" || { command -v compute-sanitizer >/dev/null &&
                        run "memcheck-$t" 150 compute-sanitizer --tool memcheck --print-limit 20 "$G/bin/test-cuda-ops-gpu" --only "$t"; }
                done
                cat "$OUT"/ops-*.log > "$OUT/ops-isolated.txt" 2>/dev/null; rm -f "$OUT"/ops-*.log
                cat "$OUT"/memcheck-*.log > "$OUT/memcheck.txt" 2>/dev/null; rm -f "$OUT"/memcheck-*.log
            fi ;;
        mmdit)  # MMDIT_ONLY="sampling pipeline": only those parts (their fixtures alone need to travel)
            if [ -n "${MMDIT_ONLY:-}" ]; then
                for p in $MMDIT_ONLY; do run "mmdit-$p" 240 "$G/bin/test-cuda-mmdit-gpu" --only "$p"; done
                cat "$OUT"/mmdit-*.log > "$OUT/mmdit.log"
            else
                run mmdit 240 "$G/bin/test-cuda-mmdit-gpu"
            fi ;;
        bench) run bench 300 "$G/bin/bench-cuda-mmdit" --weights /tmp/sd3q-bench-sd3m-f16.safetensors ${BENCH_ARGS:-} ;;  # e.g. BENCH_ARGS="--res 640,768 --steps 0"
        notune) SD3Q_CUDA_NO_TUNE=1 run bench-notune 120 "$G/bin/bench-cuda-mmdit" --weights /tmp/sd3q-bench-sd3m-f16.safetensors --res 1024 --steps 0 --no-profile ;;
        nofuse) SD3Q_CUDA_NO_FUSE=1 run bench-nofuse 120 "$G/bin/bench-cuda-mmdit" --weights /tmp/sd3q-bench-sd3m-f16.safetensors --res 1024 --steps 0 --no-profile ;;
        nolanes) SD3Q_CUDA_NO_LANES=1 run bench-nolanes 120 "$G/bin/bench-cuda-mmdit" --weights /tmp/sd3q-bench-sd3m-f16.safetensors --res 512,1024 --steps 0 --no-profile ;;  # one queue
        ncu)  # Nsight Compute on one launch of each Hopper attention kernel at 1024² (NCU_KERNELS: name regexes; the
              # first launch of each in bench-cuda-mmdit: 6 runs in the step, 7 and 12 in its loop over the variants;
            # NCU_ARGS: more ncu options, e.g. "--launch-skip 10" for a later launch)
            NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n1)
            # tensor-core (wgmma), exponential (xu), FMA and ALU pipe utilisation
            PIPES=sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active
            for k in ${NCU_KERNELS:-flash_attn_wgmma_kernelILi3ELi128 flash_attn_wgmma_ovl_kernelILi2ELi128 flash_attn_wgmma_pp}; do
                run "ncu-${k:11:14}" 200 "$NCU" --target-processes all --kernel-name-base mangled -k "regex:$k" -c 1 ${NCU_ARGS:-} \
                    --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats \
                    --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --metrics "${NCU_METRICS:-$PIPES}" \
                    "$G/bin/bench-cuda-mmdit" --weights /tmp/sd3q-bench-sd3m-f16.safetensors --res 1024 --steps 0 \
                    --no-profile --reps 1 --warmup 1
            done
            cat "$OUT"/ncu-*.log > "$OUT/ncu.txt" 2>/dev/null; rm -f "$OUT"/ncu-*.log ;;
        ab)  # A/B against another build, alternating twice (each binary writes/reads the same random weights)
            for k in 1 2; do
                run "ab-$k-base" 150 "$G/bin/bench-cuda-mmdit-base" --weights /tmp/sd3q-bench-sd3m-f16.safetensors --res 512,1024 --steps 0 --no-profile
                run "ab-$k-this" 150 "$G/bin/bench-cuda-mmdit" --weights /tmp/sd3q-bench-sd3m-f16.safetensors --res 512,1024 --steps 0 --no-profile
            done
            for f in "$OUT"/ab-*.log; do echo "== $(basename "$f" .log)"; grep -E "^== (512|1024)" "$f"; done > "$OUT/ab.txt"
            rm -f "$OUT"/ab-*.log ;;
        trace)  # kernel timelines of 1024² steps as they run (CUPTI through the injection library), with two queues and one
            for q in lanes nolanes; do
                [ $q = nolanes ] && export SD3Q_CUDA_NO_LANES=1
                SD3Q_TRACE="$OUT/trace-$q.csv" CUDA_INJECTION64_PATH="$PWD/$G/bin/libsd3q-cupti-trace.so" run "trace-$q" 200 \
                    "$G/bin/bench-cuda-mmdit" --weights /tmp/sd3q-bench-sd3m-f16.safetensors --res 1024 --steps 0 --no-profile --step-only \
                    --reps 10 --warmup 3
                unset SD3Q_CUDA_NO_LANES
                grep -E "^== 1024" "$OUT/trace-$q.log" > "$OUT/trace-$q.txt"; rm -f "$OUT/trace-$q.log"  # $OUT brings back 8 files
                python3 tools/bench/trace_step.py "$OUT/trace-$q.csv" >> "$OUT/trace-$q.txt" 2>&1
                gzip -f "$OUT/trace-$q.csv"
            done ;;
        script) run script 560 bash "$SCRIPT" ;;  # a one-off experiment (SCRIPT: a file carried in $G) with this environment
        ltcand)  # the Linear's algorithm chosen among 6 (default) or 16 timed cuBLASLt candidates, alternating twice
            for k in 1 2; do
                run "lt-$k-6" 150 "$G/bin/bench-cuda-mmdit" --weights /tmp/sd3q-bench-sd3m-f16.safetensors --res 512,1024 --steps 0 --no-profile
                SD3Q_CUDA_LT_CAND=16 run "lt-$k-16" 150 "$G/bin/bench-cuda-mmdit" --weights /tmp/sd3q-bench-sd3m-f16.safetensors --res 512,1024 --steps 0 --no-profile
            done
            for f in "$OUT"/lt-*.log; do echo "== $(basename "$f" .log)"; grep -E "^== (512|1024)|RESULT gemm" "$f"; done > "$OUT/ltcand.txt"
            rm -f "$OUT"/lt-*.log ;;
        clocks)  # what the card runs at during the 1024² step (the datasheet's peak assumes 1830 MHz for bf16)
            nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,clocks_event_reasons.active --format=csv -lms 100 > "$OUT/clocks.csv" 2>&1 &
            smi=$!
            run clocks-bench 180 "$G/bin/bench-cuda-mmdit" --weights /tmp/sd3q-bench-sd3m-f16.safetensors --res 1024 --steps 0 --no-profile --reps 300
            kill $smi 2>/dev/null ;;
        attn) run attn 240 "$G/bin/bench-cuda-attention" ${ATTN_ARGS:-} ;;
        ncustep)
            NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n1)
            run ncustep-run 400 "$NCU" --metrics gpu__time_duration.sum --csv --page raw "$G/bin/bench-cuda-mmdit" \
                --weights /tmp/sd3q-bench-sd3m-f16.safetensors --res 1024 --steps 0 --no-profile --step-only --reps 1 --warmup 1
            python3 tools/bench/ncu_step.py "$OUT/ncustep-run.log" > "$OUT/ncustep.txt" 2>&1
            gzip -f "$OUT/ncustep-run.log" ;;
        torch) run torch 420 python3 tools/bench/torch_mmdit.py ;;
        bounds) run bounds 300 python3 tools/bench/torch_bounds.py ${BOUNDS_ARGS:-} ;;  # the best library kernels' sum
        nocompile) run torch 200 python3 tools/bench/torch_mmdit.py --no-compile ;;
        lowmem)
            run lowmem 300 "$G/bin/bench-pipeline" --device cuda --low-memory --steps 28 --res 1024 --vocab-dir "$G/vocab"
            run resident 300 "$G/bin/bench-pipeline" --device cuda --steps 28 --res 1024 --vocab-dir "$G/vocab" ;;
    esac
done
echo "== steps (total $(( $(date +%s) - t0 )) s)"; printf '%s\n' "${summary[@]}"
echo "== env"; head -3 "$OUT/env.txt"; grep -E "not found|HMMA|LDSM" "$OUT/env.txt"
for f in ops mmdit; do
    [ -f "$OUT/$f.log" ] || continue
    echo "== $f: $(grep -cE ' OK$|: OK|OK$' "$OUT/$f.log") OK lines, failures:"; grep -E "FAIL|error|Abort|fault|passed|failed" "$OUT/$f.log" | head -40
done
[ -f "$OUT/ops-isolated.txt" ] && { echo "== ops isolated"; grep -E "FAIL|^\[|passed|failed|rror" "$OUT/ops-isolated.txt" | head -40; }
[ -f "$OUT/memcheck.txt" ] && { echo "== memcheck"; grep -E "Invalid|ERROR|at 0x|by thread" "$OUT/memcheck.txt" | head -20; }
echo "== results"; cat "$OUT"/bench.log "$OUT"/torch.log 2>/dev/null | grep -E "^RESULT|^== |memory end|median" | grep -v attn_variant | head -40
for f in lowmem resident; do [ -f "$OUT/$f.log" ] && { echo "== $f"; grep -vE "^  step ([2-9]|1[0-9]|2[0-7])/" "$OUT/$f.log" | tail -n 25; }; done
for f in bench-notune bench-nofuse bench-nolanes; do [ -f "$OUT/$f.log" ] && { echo "== $f"; grep -E "^== (512|1024)" "$OUT/$f.log"; }; done
[ -f "$OUT/ab.txt" ] && { echo "== ab"; cat "$OUT/ab.txt"; }
[ -f "$OUT/ltcand.txt" ] && { echo "== ltcand"; cat "$OUT/ltcand.txt"; }
[ -f "$OUT/script.log" ] && { echo "== script"; grep -vE "^RESULT" "$OUT/script.log" | tail -n 80; }
for q in lanes nolanes; do [ -f "$OUT/trace-$q.txt" ] && { echo "== trace ($q)"; cat "$OUT/trace-$q.txt"; }; done
[ -f "$OUT/attn.log" ] && { echo "== attn"; grep -vE "^RESULT" "$OUT/attn.log"; }
[ -f "$OUT/bounds.log" ] && { echo "== bounds"; grep -vE "^RESULT" "$OUT/bounds.log"; }
[ -f "$OUT/ncustep.txt" ] && { echo "== ncustep (one 1024² step, kernels one at a time)"; cat "$OUT/ncustep.txt"; }
[ -f "$OUT/clocks.csv" ] && { echo "== clocks under load (samples drawing over 250 W): SM clock MHz, power W, clock-event reasons"
    tail -n +2 "$OUT/clocks.csv" | awk -F', *' '{ split($2, c, " "); split($3, w, " "); if (w[1] + 0 > 250) print c[1], w[1], $4 }' > /tmp/clk.txt
    for k in 1 2; do sort -n -k$k /tmp/clk.txt | awk -v k=$k '{ a[NR] = $k } END { if (NR) printf "column %d: %d samples, median %s, min %s, max %s\n", k, NR, a[int((NR + 1) / 2)], a[1], a[NR] }'; done
    awk '{ print $3 }' /tmp/clk.txt | sort | uniq -c; }
exit 0
