/*
 * model.h — the immutable model object: the opened checkpoint and the validated weights of each component.
 */
#ifndef SD3Q_MODEL_MODEL_H
#define SD3Q_MODEL_MODEL_H

#include "io/checkpoint.h"
#include "model/mmdit.h"
#include "sd3q.h"

struct sd3q_model {
    struct ckpt    ck;
    struct mmdit * mmdit;   // NULL when the checkpoint has no MMDiT
};

#endif
