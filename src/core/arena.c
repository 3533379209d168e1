/*
 * arena.c — the bump allocator (see arena.h).
 */
#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/status.h"

void arena_init_measure(struct arena * a, size_t align) {
    memset(a, 0, sizeof(*a));
    a->size  = SIZE_MAX;
    a->align = align;
}

int arena_init_alloc(struct arena * a, size_t size, size_t align) {
    memset(a, 0, sizeof(*a));
    SD3Q_ASSERT(align && (align & (align - 1)) == 0);
    size_t rounded;
    if (!ck_add_size(size, align - 1, &rounded)) return -1;
    rounded &= ~(align - 1);
    if (rounded == 0) rounded = align;
    void * p = aligned_alloc(align, rounded);
    if (!p) return -1;
    a->base  = p;
    a->size  = rounded;
    a->align = align;
    a->owned = 1;
    return 0;
}

void arena_free(struct arena * a) {
    if (a->owned) free(a->base);
    memset(a, 0, sizeof(*a));
}

void * arena_alloc(struct arena * a, size_t size) {
    size_t start, end;
    if (!ck_add_size(a->used, a->align - 1, &start)) return NULL;
    start &= ~(a->align - 1);
    if (!ck_add_size(start, size, &end) || end > a->size) return NULL;
    a->used = end;
    if (end > a->peak) a->peak = end;
    if (!a->base) return (void *)(uintptr_t)(start + a->align);  // measure mode: never dereferenced
    return a->base + start;
}
