/*
 * adherence.h — does a generated image show what its caption says? The checker of the tiny model's coloured-shapes
 * domain (tools/train_tiny/shapes.py), used to judge quantized models next to PSNR and SSIM.
 */
#ifndef SD3Q_QUANT_ADHERENCE_H
#define SD3Q_QUANT_ADHERENCE_H

#include <stdint.h>

enum { ADH_BACKGROUND = 0, ADH_COUNT, ADH_COLOUR, ADH_SHAPE, ADH_SIZE, ADH_POSITION, ADH_ATTRS };
#define ADH_MAX_OBJECTS 16

extern const char * const adherence_attr_names[ADH_ATTRS];

struct adherence_result {
    int ok;                           // every attribute right
    int attr_ok[ADH_ATTRS];
    // the caption
    int want_count, want_size, want_colour, want_shape, want_position, want_background;
    // what the image shows
    int got_count, got_position, got_background;
    int all_colour, all_shape, all_size;
    int obj_colour[ADH_MAX_OBJECTS], obj_shape[ADH_MAX_OBJECTS], obj_size[ADH_MAX_OBJECTS];
};

// Parses a caption of the domain grammar ("two small red circles in the top left on a blue background"); 0, or -1
// when the caption is not in the grammar.
int adherence_parse_caption(const char * caption, struct adherence_result * r);

// Scores an 8-bit RGB image [h, w, 3] against its caption; 0, or -1 for a caption outside the grammar (or no memory).
int adherence_check(const uint8_t * rgb, int w, int h, const char * caption, struct adherence_result * r);

#endif
