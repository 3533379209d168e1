/*
 * test-adherence.c — the C adherence checker (src/quant/adherence.c) against the Python checker it ports
 * (tools/train_tiny/adherence.py) on tests/golden/adherence: 42 images of the shapes domain (ground-truth renders at
 * 128² and 256², the same images against other scenes' captions, blurred and noisy copies) with the Python verdicts
 * and detections (tools/train_tiny/make_adherence_fixture.py). Every verdict, the object count, background, group
 * position and each object's colour, shape and size must agree exactly. Also: captions outside the grammar are
 * rejected, and the parser reads the counts, articles and plurals of the grammar.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "io/png.h"
#include "quant/adherence.h"
#include "testutil.h"

#define DIR SD3Q_SOURCE_DIR "/tests/golden/adherence"

// Orders (colour, shape, size) triples as Python's sorted() orders lists.
static int cmp_obj(const void * a, const void * b) {
    const int * x = a, * y = b;
    for (int i = 0; i < 3; i++)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
}

// One fixture case: the C checker's result against the recorded Python one.
static void check_case(const cJSON * c) {
    const char * file = cJSON_GetObjectItem(c, "file")->valuestring, * caption = cJSON_GetObjectItem(c, "caption")->valuestring;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", DIR, file);
    struct rgb_image img;
    struct sd3q_errbuf e;
    if (pngio_read(path, &img, &e) != SD3Q_OK) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    struct adherence_result r;
    int rc = adherence_check(img.rgb, img.width, img.height, caption, &r);
    CHECKF(rc == 0, "%s: adherence_check failed on \"%s\"", file, caption);
    int want_ok = cJSON_IsTrue(cJSON_GetObjectItem(c, "ok"));
    const cJSON * attrs = cJSON_GetObjectItem(c, "attrs");
    int bad = r.ok != want_ok;
    for (int a = 0; a < ADH_ATTRS; a++) bad |= r.attr_ok[a] != cJSON_IsTrue(cJSON_GetArrayItem(attrs, a));
    int count = (int)cJSON_GetObjectItem(c, "count")->valuedouble, bg = (int)cJSON_GetObjectItem(c, "background")->valuedouble;
    int pos = (int)cJSON_GetObjectItem(c, "position")->valuedouble;
    bad |= r.got_count != count || r.got_background != bg || (count > 0 && r.got_position != pos);
    if (r.got_count == count && count <= ADH_MAX_OBJECTS) {
        int got[ADH_MAX_OBJECTS][3];
        for (int i = 0; i < count; i++) got[i][0] = r.obj_colour[i], got[i][1] = r.obj_shape[i], got[i][2] = r.obj_size[i];
        qsort(got, (size_t)count, sizeof got[0], cmp_obj);
        const cJSON * objs = cJSON_GetObjectItem(c, "objects");
        for (int i = 0; i < count; i++)
            for (int k = 0; k < 3; k++) bad |= got[i][k] != (int)cJSON_GetArrayItem(cJSON_GetArrayItem(objs, i), k)->valuedouble;
    }
    printf("  %s %dx%d %-4s %s%s\n", file, img.width, img.height, r.ok ? "ok" : "FAIL", caption, bad ? "   <- differs from Python" : "");
    CHECKF(!bad, "%s: C checker (ok %d, count %d, background %d, position %d) differs from Python (ok %d, count %d, background %d, "
                 "position %d)", file, r.ok, r.got_count, r.got_background, r.got_position, want_ok, count, bg, pos);
    rgb_image_free(&img);
}

int main(void) {
    cJSON * g;
    struct sd3q_errbuf e;
    SD3Q_ASSERT(json_load(DIR "/cases.json", &g, &e) == SD3Q_OK);
    const cJSON * cases = cJSON_GetObjectItem(g, "cases");
    SD3Q_ASSERT(cJSON_GetArraySize(cases) >= 40);
    int n_ok = 0, n = 0;
    const cJSON * c;
    cJSON_ArrayForEach(c, cases) {
        check_case(c);
        n_ok += cJSON_IsTrue(cJSON_GetObjectItem(c, "ok"));
        n++;
    }
    printf("%d cases, %d satisfied by the Python checker\n", n, n_ok);
    CHECK(n_ok > 0 && n_ok < n);  // the fixture exercises both verdicts
    cJSON_Delete(g);

    // the grammar
    struct adherence_result r;
    CHECK(adherence_parse_caption("Two  SMALL red circles in the top left on a blue background", &r) == 0 && r.want_count == 2 &&
          r.want_size == 0 && r.want_colour == 0 && r.want_shape == 0 && r.want_position == 0 && r.want_background == 4);
    CHECK(adherence_parse_caption("an orange cross in the center on a gray background", &r) != 0);  // the size word is missing
    CHECK(adherence_parse_caption("a large orange cross in the center on an orange background", &r) == 0 && r.want_count == 1 &&
          r.want_shape == 4 && r.want_position == 4 && r.want_background == 1);
    CHECK(adherence_parse_caption("three large blue stars in the bottom right on a white background", &r) == 0 && r.want_count == 3 &&
          r.want_shape == 3 && r.want_position == 3);
    CHECK(adherence_parse_caption("a photo of an astronaut riding a horse", &r) != 0);
    CHECK(adherence_parse_caption("", &r) != 0);
    // as adherence.py: a singular or plural shape word with any count (the checker judges images, not grammar)
    CHECK(adherence_parse_caption("two small red circle in the top left on a blue background", &r) == 0 && r.want_count == 2);
    uint8_t px[16 * 16 * 3] = {0};
    CHECK(adherence_check(px, 16, 16, "not a caption", &r) != 0);
    return test_finish("test-adherence");
}
