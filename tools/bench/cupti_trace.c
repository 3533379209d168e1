/*
 * cupti_trace.c — a CUDA injection library for timelines: loaded by the CUDA driver through
 * CUDA_INJECTION64_PATH=…/libsd3q-cupti-trace.so, it records every kernel's start, end and stream with CUPTI's
 * activity API (the kernels keep running concurrently, unlike under Nsight Compute) and writes one CSV line per kernel
 * to $SD3Q_TRACE (default trace.csv) when the program exits. tools/bench/trace_step.py reads it. A developer's tool:
 * the device has no Nsight Systems; not needed at run time.
 */
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>

static FILE * trace_out;

// CUPTI asks for an activity buffer: 8 MiB, 8-byte aligned.
static void CUPTIAPI buffer_requested(uint8_t ** buf, size_t * size, size_t * max_records) {
    *size        = 8u << 20;
    *buf         = aligned_alloc(8, *size);
    *max_records = 0;
}

// CUPTI hands back a filled buffer: one CSV line per kernel record.
static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t * buf, size_t size, size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity * r = NULL;
    while (trace_out && cuptiActivityGetNextRecord(buf, valid, &r) == CUPTI_SUCCESS) {
        if (r->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
        const CUpti_ActivityKernel10 * k = (const CUpti_ActivityKernel10 *)r;
        fprintf(trace_out, "%llu,%llu,%u,%d,%d,%d,%d,%s\n", (unsigned long long)k->start, (unsigned long long)k->end,
                k->streamId, k->gridX, k->gridY, k->gridZ, k->blockX * k->blockY * k->blockZ, k->name ? k->name : "?");
    }
    free(buf);
}

// At exit: every pending record written, the file closed.
static void trace_finish(void) {
    cuptiActivityFlushAll(1);
    if (trace_out) fclose(trace_out);
    trace_out = NULL;
}

// The driver's entry point for injection libraries: start recording kernels.
int InitializeInjection(void) {
    const char * path = getenv("SD3Q_TRACE");
    trace_out         = fopen(path ? path : "trace.csv", "w");
    if (!trace_out) return 0;
    fprintf(trace_out, "start_ns,end_ns,stream,gx,gy,gz,threads,name\n");
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
        fprintf(stderr, "cupti_trace: CUPTI would not record kernels\n");
        return 0;
    }
    atexit(trace_finish);
    return 1;
}
