/*
 * profile.h — per-op timing by wrapping a backend (see profile.c).
 */
#ifndef SD3Q_BACKEND_PROFILE_H
#define SD3Q_BACKEND_PROFILE_H

#include <stdio.h>

#include "backend/backend.h"

// Wraps `inner` (ownership moves to the wrapper: freeing the wrapper frees both). NULL when out of memory.
struct backend * backend_profile_wrap(struct backend * inner);

// Prints seconds, calls, share and achieved GFLOP/s per op (nothing for a backend that is not a wrapper).
void backend_profile_report(struct backend * b, FILE * f);

// Zeroes the counters.
void backend_profile_reset(struct backend * b);

#endif
