/*
 * arena.h — aligned bump allocator with mark/rewind and a measure mode.
 *
 * A session first runs its planning pass on a measuring arena (no memory; it only records the peak), then
 * allocates that many bytes once and runs every forward pass on it, rewinding between model calls. Nothing is
 * allocated inside the denoising loop.
 */
#ifndef SD3Q_CORE_ARENA_H
#define SD3Q_CORE_ARENA_H

#include <stddef.h>
#include <stdint.h>

struct arena {
    uint8_t * base;   // NULL in measure mode
    size_t    size;   // capacity in bytes (SIZE_MAX in measure mode)
    size_t    used;   // current offset
    size_t    peak;   // largest offset reached
    size_t    align;  // power of two
    int       owned;  // 1 when base came from arena_init_alloc
};

// A measuring arena: allocations only advance the offsets (returned pointers are NULL-based and must not be used).
void arena_init_measure(struct arena * a, size_t align);

// Allocates `size` bytes (aligned) for the arena; returns 0 on success, -1 when out of memory.
int arena_init_alloc(struct arena * a, size_t size, size_t align);

// Frees the owned memory.
void arena_free(struct arena * a);

// Bump-allocates `size` bytes aligned to the arena's alignment. Returns NULL on overflow of the capacity (a planning
// bug: callers assert), or a fake non-NULL pointer in measure mode.
void * arena_alloc(struct arena * a, size_t size);

// Bump-allocates n floats.
static inline float * arena_floats(struct arena * a, int64_t n) { return (float *)arena_alloc(a, (size_t)n * sizeof(float)); }

// Returns the current offset, for arena_rewind.
static inline size_t arena_mark(const struct arena * a) { return a->used; }

// Rewinds to an earlier mark.
static inline void arena_rewind(struct arena * a, size_t mark) { a->used = mark; }

// 1 when the arena only measures.
static inline int arena_measuring(const struct arena * a) { return a->base == NULL; }

#endif
