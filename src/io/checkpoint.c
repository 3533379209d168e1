/*
 * checkpoint.c — layout detection and per-component tensor lists (see checkpoint.h).
 *
 * Follows the key prefixes of Stability's single files and the folder structure of
 * stabilityai/stable-diffusion-3-medium-diffusers (../shared/research/sd3_arch_spec.md §4.6).
 */
#include "io/checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileutil.h"
#include "io/json.h"

static const char * const comp_names[SD3Q_COMP_COUNT] = {"mmdit", "clip_l", "clip_g", "t5xxl", "vae"};

// Single-file prefixes, per component.
static const char * const single_prefix[SD3Q_COMP_COUNT] = {
    "model.diffusion_model.", "text_encoders.clip_l.transformer.", "text_encoders.clip_g.transformer.",
    "text_encoders.t5xxl.transformer.", "first_stage_model."};

// diffusers sub-folders, per component.
static const char * const diffusers_dir[SD3Q_COMP_COUNT] = {"transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"};

const char * comp_name(enum sd3q_component c) { return (c >= 0 && c < SD3Q_COMP_COUNT) ? comp_names[c] : "?"; }

static int starts_with(const char * s, const char * p) { return strncmp(s, p, strlen(p)) == 0; }

static int cmp_comp_tensor(const void * a, const void * b) {
    return strcmp(((const struct comp_tensor *)a)->name, ((const struct comp_tensor *)b)->name);
}

const struct st_tensor * comp_find(const struct ckpt_component * c, const char * name) {
    int lo = 0, hi = c->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int r = strcmp(c->t[mid].name, name);
        if (r == 0) return c->t[mid].t;
        if (r < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

// Opens a safetensors file and keeps it in the checkpoint; *out points at it.
static enum sd3q_status add_file(struct ckpt * c, const char * path, struct st_file ** out, struct sd3q_errbuf * e) {
    for (int i = 0; i < c->n_files; i++)
        if (strcmp(c->files[i]->path, path) == 0) {
            *out = c->files[i];
            return SD3Q_OK;
        }
    struct st_file ** nf = realloc(c->files, sizeof(*nf) * (size_t)(c->n_files + 1));
    if (!nf) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    c->files = nf;
    struct st_file * f = calloc(1, sizeof(*f));
    if (!f) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    enum sd3q_status st = st_open(path, f, e);
    if (st != SD3Q_OK) {
        free(f);
        return st;
    }
    c->files[c->n_files++] = f;
    *out = f;
    return SD3Q_OK;
}

// Appends the tensors of `f` whose names start with `prefix` (stripped) to a component.
static enum sd3q_status comp_add_tensors(struct ckpt_component * comp, const struct st_file * f, const char * prefix,
                                         struct sd3q_errbuf * e) {
    size_t pl = strlen(prefix);
    int cnt = 0;
    for (int i = 0; i < f->n; i++)
        if (starts_with(f->t[i].name, prefix)) cnt++;
    struct comp_tensor * nt = realloc(comp->t, sizeof(*nt) * (size_t)(comp->n + cnt + 1));
    if (!nt) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    comp->t = nt;
    for (int i = 0; i < f->n; i++)
        if (starts_with(f->t[i].name, prefix)) {
            comp->t[comp->n].name = f->t[i].name + pl;
            comp->t[comp->n].t    = &f->t[i];
            comp->n++;
        }
    return SD3Q_OK;
}

// Sorts a component's tensors and rejects a name that two shards both provide.
static enum sd3q_status comp_finish(struct ckpt_component * comp, struct sd3q_errbuf * e) {
    if (comp->n > 1) qsort(comp->t, (size_t)comp->n, sizeof(*comp->t), cmp_comp_tensor);
    for (int i = 1; i < comp->n; i++)
        if (strcmp(comp->t[i - 1].name, comp->t[i].name) == 0)
            return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s' is provided twice", comp->origin, comp->t[i].name);
    return SD3Q_OK;
}

static void comp_reset(struct ckpt_component * comp) {
    free(comp->origin);
    free(comp->config_path);
    free(comp->t);
    memset(comp, 0, sizeof(*comp));
}

// Sets the origin text with printf formatting.
static enum sd3q_status comp_set_origin(struct ckpt_component * comp, struct sd3q_errbuf * e, const char * fmt, const char * a,
                                        const char * b) {
    char buf[1024];
    snprintf(buf, sizeof buf, fmt, a, b);
    free(comp->origin);
    comp->origin = strdup(buf);
    return comp->origin ? SD3Q_OK : err_set(e, SD3Q_ERR_OOM, "out of memory");
}

// Guesses the naming scheme of MMDiT or VAE tensors from characteristic keys.
static enum naming guess_naming(const struct ckpt_component * comp, enum sd3q_component which) {
    for (int i = 0; i < comp->n; i++) {
        const char * n = comp->t[i].name;
        if (which == SD3Q_COMP_MMDIT && (starts_with(n, "transformer_blocks.") || starts_with(n, "pos_embed.proj."))) return NAMING_DIFFUSERS;
        if (which == SD3Q_COMP_VAE && (strstr(n, "mid_block.") || strstr(n, "up_blocks.") || strstr(n, "down_blocks."))) return NAMING_DIFFUSERS;
    }
    return NAMING_ORIGINAL;
}

// Validates a shard file name from an index: a plain file name inside the folder.
static int safe_shard_name(const char * s) {
    return s[0] && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

// Loads a component from a folder: `<base>.safetensors`, or shards listed in `<base>.safetensors.index.json`.
static enum sd3q_status load_folder_component(struct ckpt * c, enum sd3q_component which, const char * dir, const char * base,
                                              struct sd3q_errbuf * e) {
    struct ckpt_component * comp = &c->comp[which];
    char name[256];
    snprintf(name, sizeof name, "%s.safetensors", base);
    char * single = path_join(dir, name);
    snprintf(name, sizeof name, "%s.safetensors.index.json", base);
    char * index = path_join(dir, name);
    char * cfg = path_join(dir, "config.json");
    enum sd3q_status st = SD3Q_OK;
    cJSON * j = NULL;
    if (!single || !index || !cfg) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto cleanup;
    }
    if (path_is_file(cfg)) {
        comp->config_path = cfg;
        cfg = NULL;
    }
    if (path_is_file(single)) {
        struct st_file * f;
        if ((st = add_file(c, single, &f, e)) != SD3Q_OK) goto cleanup;
        if ((st = comp_add_tensors(comp, f, "", e)) != SD3Q_OK) goto cleanup;
        if ((st = comp_set_origin(comp, e, "%s", single, NULL)) != SD3Q_OK) goto cleanup;
    } else if (path_is_file(index)) {
        if ((st = json_load(index, &j, e)) != SD3Q_OK) goto cleanup;
        const cJSON * wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
        if (!cJSON_IsObject(wm)) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"weight_map\" is missing or not an object", index);
            goto cleanup;
        }
        const cJSON * it;
        cJSON_ArrayForEach(it, wm) {
            if (!cJSON_IsString(it) || !safe_shard_name(it->valuestring)) {
                st = err_set(e, SD3Q_ERR_FORMAT, "%s: weight_map entry '%s' must name a file in the same folder", index,
                             it->string ? it->string : "?");
                goto cleanup;
            }
            char * sp = path_join(dir, it->valuestring);
            if (!sp) {
                st = err_set(e, SD3Q_ERR_OOM, "out of memory");
                goto cleanup;
            }
            int before = c->n_files;
            struct st_file * f;
            st = add_file(c, sp, &f, e);
            free(sp);
            if (st != SD3Q_OK) goto cleanup;
            if (c->n_files > before && (st = comp_add_tensors(comp, f, "", e)) != SD3Q_OK) goto cleanup;
            if (!st_find(f, it->string)) {
                st = err_set(e, SD3Q_ERR_MISSING, "%s: weight_map says '%s' is in %s, but that file does not hold it", index,
                             it->string, it->valuestring);
                goto cleanup;
            }
        }
        if ((st = comp_set_origin(comp, e, "%s (sharded)", index, NULL)) != SD3Q_OK) goto cleanup;
    } else {
        st = err_set(e, SD3Q_ERR_MISSING, "%s: neither %s.safetensors nor %s.safetensors.index.json found", dir, base, base);
        goto cleanup;
    }
    comp->present = 1;
    st = comp_finish(comp, e);
    if (st == SD3Q_OK && (which == SD3Q_COMP_MMDIT || which == SD3Q_COMP_VAE)) comp->naming = guess_naming(comp, which);
cleanup:
    cJSON_Delete(j);
    free(single);
    free(index);
    free(cfg);
    return st;
}

// Base file name of a component's weights in a diffusers folder.
static const char * diffusers_base(enum sd3q_component which) {
    return (which == SD3Q_COMP_MMDIT || which == SD3Q_COMP_VAE) ? "diffusion_pytorch_model" : "model";
}

// Reads the sampling shift from <root>/scheduler/scheduler_config.json when it exists, so that a folder samples as
// diffusers' pipeline would (a config without the field gets the class's default, 1.0, as in diffusers). Only
// FlowMatchEulerDiscreteScheduler's fixed shift is implemented: a config asking for another scheduler or for dynamic
// (resolution-dependent) shifting is rejected rather than sampled differently.
static enum sd3q_status load_scheduler(struct ckpt * c, const char * root, struct sd3q_errbuf * e) {
    char * path = path_join(root, "scheduler/scheduler_config.json");
    if (!path) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    if (!path_is_file(path)) {
        free(path);
        return SD3Q_OK;
    }
    c->scheduler = path;
    cJSON * j = NULL;
    enum sd3q_status st = json_load(path, &j, e);
    if (st != SD3Q_OK) return st;
    double shift = SD3Q_DEFAULT_SHIFT;
    const char * cls = json_get_str(j, "_class_name");
    if (!cJSON_IsObject(j))
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: expected a JSON object", path);
    else if (cls && strcmp(cls, "FlowMatchEulerDiscreteScheduler"))
        st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: _class_name is \"%.64s\"; only FlowMatchEulerDiscreteScheduler is implemented",
                     path, cls);
    else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_dynamic_shifting")))
        st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: use_dynamic_shifting is true; only a fixed shift is implemented", path);
    else if ((st = json_get_num(j, "shift", 1.0, &shift, path, e)) == SD3Q_OK &&  // absent: the class default, 1.0
             !(shift >= SD3Q_MIN_SHIFT && shift <= SD3Q_MAX_SHIFT))
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: field \"shift\" is %g; expected %g to %g", path, shift, SD3Q_MIN_SHIFT,
                     SD3Q_MAX_SHIFT);
    if (st == SD3Q_OK) c->shift = shift;
    cJSON_Delete(j);
    return st;
}

// Loads a diffusers folder: every component sub-folder that exists.
static enum sd3q_status load_diffusers(struct ckpt * c, const char * root, struct sd3q_errbuf * e) {
    c->root = strdup(root);
    if (!c->root) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    for (int k = 0; k < SD3Q_COMP_COUNT; k++) {
        char * dir = path_join(root, diffusers_dir[k]);
        if (!dir) return err_set(e, SD3Q_ERR_OOM, "out of memory");
        enum sd3q_status st = SD3Q_OK;
        if (path_is_dir(dir)) st = load_folder_component(c, (enum sd3q_component)k, dir, diffusers_base((enum sd3q_component)k), e);
        free(dir);
        if (st != SD3Q_OK) return st;
    }
    static const char * const tok[3] = {"tokenizer", "tokenizer_2", "tokenizer_3"};
    for (int k = 0; k < 3; k++) {
        char * dir = path_join(root, tok[k]);
        if (!dir) return err_set(e, SD3Q_ERR_OOM, "out of memory");
        if (path_is_dir(dir)) c->tokenizer[k] = dir;
        else free(dir);
    }
    return load_scheduler(c, root, e);
}

// Counts a tensor that belongs to no component, remembering the first one and its file for the error message.
static enum sd3q_status note_unknown(struct ckpt * c, const char * path, const char * name, struct sd3q_errbuf * e) {
    if (!c->first_unknown) {
        c->first_unknown = strdup(name);
        c->unknown_file  = strdup(path);
        if (!c->first_unknown || !c->unknown_file) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    }
    c->n_unknown++;
    return SD3Q_OK;
}

// Loads an original single file: each known prefix becomes a component; other keys are counted as unknown.
static enum sd3q_status load_single(struct ckpt * c, const char * path, struct sd3q_errbuf * e) {
    struct st_file * f;
    TRY(add_file(c, path, &f, e));
    for (int k = 0; k < SD3Q_COMP_COUNT; k++) {
        struct ckpt_component * comp = &c->comp[k];
        TRY(comp_add_tensors(comp, f, single_prefix[k], e));
        if (comp->n == 0) continue;
        comp->present = 1;
        comp->naming  = NAMING_ORIGINAL;
        TRY(comp_set_origin(comp, e, "%s (prefix %s)", path, single_prefix[k]));
        TRY(comp_finish(comp, e));
        if (k == SD3Q_COMP_VAE) comp->naming = guess_naming(comp, SD3Q_COMP_VAE);
    }
    for (int i = 0; i < f->n; i++) {
        int known = 0;
        for (int k = 0; k < SD3Q_COMP_COUNT && !known; k++) known = starts_with(f->t[i].name, single_prefix[k]);
        if (!known) TRY(note_unknown(c, path, f->t[i].name, e));
    }
    return SD3Q_OK;
}

// Loads one component from a split file or folder given on the command line (--mmdit, --clip-l, ...).
static enum sd3q_status load_split(struct ckpt * c, enum sd3q_component which, const char * path, struct sd3q_errbuf * e) {
    comp_reset(&c->comp[which]);
    if (path_is_dir(path)) return load_folder_component(c, which, path, diffusers_base(which), e);
    struct st_file * f;
    TRY(add_file(c, path, &f, e));
    struct ckpt_component * comp = &c->comp[which];
    // a split file may or may not carry the single-file prefix
    const char * prefix = "";
    for (int i = 0; i < f->n; i++)
        if (starts_with(f->t[i].name, single_prefix[which])) {
            prefix = single_prefix[which];
            break;
        }
    TRY(comp_add_tensors(comp, f, prefix, e));
    // with a prefix, the keys without it belong to no component (as in a single file): not silently dropped
    for (int i = 0; prefix[0] && i < f->n; i++)
        if (!starts_with(f->t[i].name, prefix)) TRY(note_unknown(c, path, f->t[i].name, e));
    if (comp->n == 0) return err_set(e, SD3Q_ERR_MISSING, "%s: no tensors for %s", path, comp_names[which]);
    comp->present = 1;
    TRY(comp_set_origin(comp, e, "%s%s", path, prefix[0] ? " (prefixed)" : ""));
    TRY(comp_finish(comp, e));
    if (which == SD3Q_COMP_MMDIT || which == SD3Q_COMP_VAE) comp->naming = guess_naming(comp, which);
    return SD3Q_OK;
}

enum sd3q_status ckpt_open(const struct sd3q_model_params * p, struct ckpt * c, struct sd3q_errbuf * e) {
    memset(c, 0, sizeof(*c));
    c->shift = SD3Q_DEFAULT_SHIFT;
    enum sd3q_status st = SD3Q_OK;
    if (p->path) {
        if (path_is_dir(p->path)) {
            st = load_diffusers(c, p->path, e);
        } else if (path_is_file(p->path)) {
            st = load_single(c, p->path, e);
        } else {
            st = err_set(e, SD3Q_ERR_MISSING, "%s: no such file or folder", p->path);
        }
        if (st != SD3Q_OK) goto fail;
    }
    const char * split[SD3Q_COMP_COUNT] = {p->mmdit_path, p->clip_l_path, p->clip_g_path, p->t5xxl_path, p->vae_path};
    for (int k = 0; k < SD3Q_COMP_COUNT; k++) {
        if (!split[k]) continue;
        if ((st = load_split(c, (enum sd3q_component)k, split[k], e)) != SD3Q_OK) goto fail;
    }
    int any = 0;
    for (int k = 0; k < SD3Q_COMP_COUNT; k++) any |= c->comp[k].present;
    if (!any) {
        st = err_set(e, SD3Q_ERR_MISSING, "%s: no SD3 components found (expected model.diffusion_model.*, text_encoders.*, "
                                          "first_stage_model.* keys, or a diffusers folder with transformer/, vae/, ...)",
                     p->path ? p->path : "(no --model)");
        goto fail;
    }
    return SD3Q_OK;
fail:
    ckpt_close(c);
    return st;
}

void ckpt_close(struct ckpt * c) {
    for (int k = 0; k < SD3Q_COMP_COUNT; k++) comp_reset(&c->comp[k]);
    for (int i = 0; i < c->n_files; i++) {
        st_close(c->files[i]);
        free(c->files[i]);
    }
    free(c->files);
    free(c->root);
    for (int k = 0; k < 3; k++) free(c->tokenizer[k]);
    free(c->scheduler);
    free(c->first_unknown);
    free(c->unknown_file);
    memset(c, 0, sizeof(*c));
}
