/*
 * scheduler.h — flow-matching schedule helpers (the public sd3q_schedule lives in sd3q.h).
 */
#ifndef SD3Q_MODEL_SCHEDULER_H
#define SD3Q_MODEL_SCHEDULER_H

#include "sd3q.h"

#define SCHED_MAX_STEPS 10000

// The timestep the model receives for a sigma: float32(σ · 1000), as the scheduler computes it.
float sched_timestep(float sigma);

#endif
