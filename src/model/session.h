/*
 * session.h — the per-run object (opaque in the public API).
 */
#ifndef SD3Q_MODEL_SESSION_H
#define SD3Q_MODEL_SESSION_H

#include "backend/backend.h"
#include "core/arena.h"
#include "model/model.h"

struct sd3q_session {
    const struct sd3q_model *  model;
    struct sd3q_session_params p;
    struct backend *           bk;
    struct arena               ar;        // activations, planned at init
    struct sd3q_errbuf         err;
    sd3q_progress_fn           progress;
    void *                     progress_ud;
    struct mmdit_hook          hook;      // activation observer (calibration statistics, tests)
    float *                    host_v;    // [max_batch, C, h, w] velocity staging for the Euler update
    float *                    host_t;    // [max_batch, 256] timestep embeddings before upload
    int                        force_ref; // 1: scalar reference ops (tests)
};

// sd3q_session_init with the choice of the scalar reference backend (ref = 1), for tests and op comparisons.
enum sd3q_status session_create(const struct sd3q_model * model, const struct sd3q_session_params * params, int ref,
                                struct sd3q_session ** out, char * err, size_t err_size);

#endif
