/*
 * version.c — the library version string (set by CMake from the project version).
 */
#include "sd3q.h"

#ifndef SD3Q_VERSION_STR
#define SD3Q_VERSION_STR "0.0.0"
#endif

const char * sd3q_version(void) { return SD3Q_VERSION_STR; }
