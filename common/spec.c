/* The run spec (spec.h): strict JSON <-> run_spec conversion shared by the
 * local runner, the server's POST /v1/runs and the worker. Parsing is
 * all-or-nothing: the text is decoded by cJSON, every object is checked for
 * unknown and duplicate keys, every value for its type and range, then the
 * cross-field rules (task family vs. model widths) run, and only then is the
 * caller's struct written. Errors name the dotted field ("inner.steps").
 * This module never logs (STYLE C13). */
#include "spec.h"

#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPEC_MAX_FILE (1u << 20) /* spec_load refuses larger files */
#define SPEC_MAX_WIDTH 1048576   /* one layer width, the limit of mlp_new */
#define SPEC_MAX_EXAMPLES 100000 /* task.shots, task.queries */
#define SPEC_MAX_EVAL_TASKS 1000000
#define SPEC_MAX_STALENESS 1000000
#define SPEC_MAX_LEASE 86400 /* seconds */
#define SPEC_MAX_SHARDS 1024
#define SPEC_MAX_NEUMANN_N 100
#define SPEC_MAX_SEED 9007199254740992.0 /* 2^53: every seed survives a JSON double */
#define SPEC_JSON_CAP 4096               /* canonical JSON is < 2 KiB; see spec_to_json */

void spec_default(run_spec *s) {
    static const size_t widths[] = {1, 100, 100, 100, 1};
    memset(s, 0, sizeof *s);
    s->task.family = TASK_SINUSOID;
    s->task.shots = 10;
    s->task.queries = 10;
    s->task.in_dim = 1;
    s->task.out_dim = 1;
    s->task.classes = 0;
    s->nwidths = sizeof widths / sizeof widths[0];
    memcpy(s->widths, widths, sizeof widths);
    s->act = MLP_ACT_RELU;
    s->loss = MLP_LOSS_MSE;
    s->hyper_layers = 3;
    s->steps = 30;
    s->inner.lr = 0.01;
    s->inner.momentum = 0.9;
    outer_cfg_default(&s->outer);
    method_cfg_default(&s->method);
    s->clip_norm = 0.0;
    s->skip_nonfinite = 0;
    s->guard_loss = 0.0;
    s->blowup_loss = 50.0;
    s->episodes = 30;
    s->meta_batch = 10;
    s->reptile_lr = 1.0;
    s->seed = 1;
    s->meta_val_tasks = 200;
    s->meta_test_tasks = 1000;
    s->eval_interval = 0;
    s->mode = SPEC_MODE_SYNC;
    s->max_staleness = 4;
    s->lease_seconds = 30;
    s->shards = 1;
    s->wire_f32 = 0;
}

/* ---- number formatting --------------------------------------------------- */

/* Shortest "%.*g" text of d that strtod reads back to exactly d (at most 17
 * significant digits always suffice for a binary64); integers below 2^53 in
 * plain digits. Non-finite values print as "inf"/"nan"; callers that emit
 * JSON handle them first. */
static void fmt_num(char *buf, size_t cap, double d) {
    if (!isfinite(d)) {
        snprintf(buf, cap, "%g", d);
        return;
    }
    /* Integral values print as integers ("50", not the shorter "5e+01"). */
    if (d == floor(d) && fabs(d) < 9007199254740992.0 && !(d == 0.0 && signbit(d))) {
        snprintf(buf, cap, "%.0f", d);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) return;
    }
}

/* ---- parser context: the first error sticks, later checks are no-ops ----- */

typedef struct {
    hd_rc rc;    /* HD_OK until the first failure */
    hd_err *err; /* caller's error, may be NULL */
} pctx;

static void fail(pctx *p, hd_rc rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(pctx *p, hd_rc rc, const char *fmt, ...) {
    if (p->rc != HD_OK) return;
    char msg[sizeof p->err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    p->rc = rc;
    hd_err_set(p->err, rc, "%s", msg);
}

/* Copy untrusted text (a key or string value) for an error message: at most
 * cap-1 bytes, anything but printable ASCII replaced by '?' (control bytes,
 * and UTF-8 that may be invalid), "..." marks truncation. Keeps log lines
 * and JSON error bodies one clean line. */
static void clean(char *dst, size_t cap, const char *src) {
    size_t i = 0;
    if (!src) src = "";
    for (; src[i] && i + 1 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < 0x20 || ch >= 0x7f) ? '?' : (char)ch;
    }
    dst[i] = '\0';
    if (src[i] && cap >= 4) memcpy(dst + cap - 4, "...", 4);
}

/* The last component of a dotted path: the key inside its parent object. */
static const char *leaf(const char *path) {
    const char *dot = strrchr(path, '.');
    return dot ? dot + 1 : path;
}

/* Member of obj named by the last component of path; NULL if obj is NULL
 * (section absent) or the key is absent. Keys are case-sensitive. */
static const cJSON *member(const cJSON *obj, const char *path) {
    return obj ? cJSON_GetObjectItemCaseSensitive(obj, leaf(path)) : NULL;
}

/* Refuse keys of obj that are not in allowed[0..n), and repeated keys (cJSON
 * keeps duplicates; we would otherwise read only the first). Stops at the
 * first offender, so even a huge object costs at most n+1 key lookups. */
static void check_keys(pctx *p, const cJSON *obj, const char *prefix, const char *const *allowed,
                       size_t n) {
    unsigned char seen[32] = {0};
    HD_ASSERT(n <= sizeof seen);
    if (p->rc != HD_OK || !obj) return;
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *name = c->string ? c->string : "";
        size_t i = 0;
        while (i < n && strcmp(name, allowed[i]) != 0) i++;
        if (i < n && !seen[i]) {
            seen[i] = 1;
            continue;
        }
        char key[72];
        clean(key, sizeof key, name);
        fail(p, HD_EINVAL, "%s%s%s: %s", prefix, *prefix ? "." : "", key,
             i == n ? "unknown field" : "duplicate field");
        return;
    }
}

/* Nested object `path` of root: NULL when absent, an error when not an object. */
static const cJSON *section(pctx *p, const cJSON *root, const char *path) {
    if (p->rc != HD_OK) return NULL;
    const cJSON *it = member(root, path);
    if (it && !cJSON_IsObject(it)) {
        fail(p, HD_EINVAL, "%s: must be an object", path);
        return NULL;
    }
    return it;
}

/* Check that item is an integral JSON number in [lo, hi]; path names it. */
static int int_item(pctx *p, const cJSON *it, const char *path, int64_t lo, int64_t hi,
                    int64_t *out) {
    double d = it->valuedouble;
    if (!cJSON_IsNumber(it) || (isfinite(d) && d != floor(d))) {
        fail(p, HD_EINVAL, "%s: must be an integer", path);
        return 0;
    }
    if (!(d >= (double)lo && d <= (double)hi)) {
        char got[32];
        fmt_num(got, sizeof got, d);
        fail(p, HD_EINVAL, "%s: must be an integer in [%" PRId64 ", %" PRId64 "], got %s", path, lo,
             hi, got);
        return 0;
    }
    *out = (int64_t)d;
    return 1;
}

/* Optional integer field: returns 1 and sets *out when present and valid,
 * 0 (out untouched) when absent or after an error. */
static int int_at(pctx *p, const cJSON *obj, const char *path, int64_t lo, int64_t hi,
                  int64_t *out) {
    if (p->rc != HD_OK) return 0;
    const cJSON *it = member(obj, path);
    return it ? int_item(p, it, path, lo, hi, out) : 0;
}

static int get_int(pctx *p, const cJSON *obj, const char *path, int64_t lo, int64_t hi, int *out) {
    int64_t v;
    if (!int_at(p, obj, path, lo, hi, &v)) return 0;
    *out = (int)v;
    return 1;
}

static int get_size(pctx *p, const cJSON *obj, const char *path, int64_t lo, int64_t hi,
                    size_t *out) {
    int64_t v;
    if (!int_at(p, obj, path, lo, hi, &v)) return 0;
    *out = (size_t)v;
    return 1;
}

/* Optional finite real in the interval from lo to hi (each bound open or
 * closed; +-INFINITY for none). */
static int get_real(pctx *p, const cJSON *obj, const char *path, double lo, int lo_open, double hi,
                    int hi_open, double *out) {
    if (p->rc != HD_OK) return 0;
    const cJSON *it = member(obj, path);
    if (!it) return 0;
    if (!cJSON_IsNumber(it)) {
        fail(p, HD_EINVAL, "%s: must be a number", path);
        return 0;
    }
    double d = it->valuedouble;
    char got[32];
    fmt_num(got, sizeof got, d);
    if (!isfinite(d)) {
        fail(p, HD_EINVAL, "%s: must be finite, got %s", path, got);
        return 0;
    }
    int low_ok = lo_open ? d > lo : d >= lo;
    int high_ok = hi_open ? d < hi : d <= hi;
    if (low_ok && high_ok) {
        *out = d;
        return 1;
    }
    if (isinf(hi))
        fail(p, HD_EINVAL, "%s: must be %s %g, got %s", path, lo_open ? ">" : ">=", lo, got);
    else
        fail(p, HD_EINVAL, "%s: must be in %c%g, %g%c, got %s", path, lo_open ? '(' : '[', lo, hi,
             hi_open ? ')' : ']', got);
    return 0;
}

static int get_bool(pctx *p, const cJSON *obj, const char *path, int *out) {
    if (p->rc != HD_OK) return 0;
    const cJSON *it = member(obj, path);
    if (!it) return 0;
    if (!cJSON_IsBool(it)) {
        fail(p, HD_EINVAL, "%s: must be a boolean", path);
        return 0;
    }
    *out = cJSON_IsTrue(it) ? 1 : 0;
    return 1;
}

/* Optional string naming one of names[0..n): sets *out to its index.
 * `what` is the noun of the message ("unknown method 'x' (fo, ...)"). */
static int get_enum(pctx *p, const cJSON *obj, const char *path, const char *what,
                    const char *const *names, int n, int *out) {
    if (p->rc != HD_OK) return 0;
    const cJSON *it = member(obj, path);
    if (!it) return 0;
    if (!cJSON_IsString(it) || !it->valuestring) {
        fail(p, HD_EINVAL, "%s: must be a string", path);
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (strcmp(it->valuestring, names[i]) == 0) {
            *out = i;
            return 1;
        }
    char list[128] = "", got[72];
    size_t len = 0;
    for (int i = 0; i < n && len < sizeof list; i++) {
        int w = snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", names[i]);
        if (w < 0) break;
        len += (size_t)w;
    }
    clean(got, sizeof got, it->valuestring);
    fail(p, HD_EINVAL, "%s: unknown %s '%s' (%s)", path, what, got, list);
    return 0;
}

/* ---- the spec ------------------------------------------------------------ */

/* Allowed keys of each object. */
static const char *const k_top[] = {"task",          "model",         "inner",    "outer",
                                    "method",        "robust",        "episodes", "meta_batch",
                                    "reptile_lr",    "seed",          "eval",     "mode",
                                    "max_staleness", "lease_seconds", "shards",   "wire_dtype"};
static const char *const k_task[] = {"family", "shots", "queries", "classes"};
static const char *const k_model[] = {"layers", "activation", "loss", "hyper_layers"};
static const char *const k_inner[] = {"steps", "lr", "momentum"};
static const char *const k_outer[] = {"optimizer", "lr", "beta1", "beta2", "eps"};
static const char *const k_method[] = {"name",      "gamma",      "estimation_period",
                                       "pi_mode",   "theta_init", "neumann_n",
                                       "neumann_k", "neumann_lr"};
static const char *const k_robust[] = {"clip_norm", "skip_nonfinite", "guard_loss", "blowup_loss"};
static const char *const k_eval[] = {"meta_val_tasks", "meta_test_tasks", "interval"};
#define NKEYS(a) (sizeof(a) / sizeof((a)[0]))

/* Name tables indexed by the enum values (order pinned by the static asserts). */
static const char *const act_names[] = {"relu", "tanh"};
static const char *const loss_names[] = {"mse", "xent"};
static const char *const pi_names[] = {"fitted", "unit"};
static const char *const mode_names[] = {"sync", "async"};
static const char *const wire_names[] = {"f8", "f4"}; /* index = wire_f32 */
_Static_assert(MLP_ACT_RELU == 0 && MLP_ACT_TANH == 1, "act_names order");
_Static_assert(MLP_LOSS_MSE == 0 && MLP_LOSS_XENT == 1, "loss_names order");
_Static_assert(SPEC_MODE_SYNC == 0 && SPEC_MODE_ASYNC == 1, "mode_names order");
_Static_assert(TASK_SINUSOID == 0 && TASK_GAUSSMIX == 1, "family order");
_Static_assert(OUTER_ADAM == 0 && OUTER_SGD == 1, "optimizer order");

static void parse_task_model(pctx *p, const cJSON *root, run_spec *s) {
    const cJSON *task = section(p, root, "task");
    const cJSON *model = section(p, root, "model");
    check_keys(p, task, "task", k_task, NKEYS(k_task));
    check_keys(p, model, "model", k_model, NKEYS(k_model));
    if (p->rc != HD_OK) return;

    const char *fam_names[2] = {task_family_name(TASK_SINUSOID), task_family_name(TASK_GAUSSMIX)};
    int fam = 0;
    if (!member(task, "task.family")) {
        fail(p, HD_EINVAL, "task.family: required (sinusoid or gaussmix)");
        return;
    }
    get_enum(p, task, "task.family", "family", fam_names, 2, &fam);
    s->task.family = fam == 1 ? TASK_GAUSSMIX : TASK_SINUSOID;
    get_size(p, task, "task.shots", 1, SPEC_MAX_EXAMPLES, &s->task.shots);
    get_size(p, task, "task.queries", 1, SPEC_MAX_EXAMPLES, &s->task.queries);
    if (p->rc == HD_OK && s->task.family == TASK_SINUSOID && member(task, "task.classes"))
        fail(p, HD_EINVAL, "task.classes: only valid for family gaussmix");
    size_t classes = 0;
    int have_classes = get_size(p, task, "task.classes", 2, SPEC_MAX_WIDTH, &classes);
    if (p->rc != HD_OK) return;

    const cJSON *layers = member(model, "model.layers");
    if (!layers) {
        fail(p, HD_EINVAL, "model.layers: required (an array of 2 to %d widths)",
             MLP_MAX_LAYERS + 1);
        return;
    }
    if (!cJSON_IsArray(layers)) {
        fail(p, HD_EINVAL, "model.layers: must be an array of integers");
        return;
    }
    size_t n = 0;
    for (const cJSON *c = layers->child; c && p->rc == HD_OK; c = c->next) {
        if (n == MLP_MAX_LAYERS + 1) {
            fail(p, HD_EINVAL, "model.layers: must have 2 to %d entries, got more",
                 MLP_MAX_LAYERS + 1);
            return;
        }
        char path[40];
        int64_t w;
        snprintf(path, sizeof path, "model.layers[%zu]", n);
        if (int_item(p, c, path, 1, SPEC_MAX_WIDTH, &w)) s->widths[n++] = (size_t)w;
    }
    if (p->rc != HD_OK) return;
    if (n < 2) {
        fail(p, HD_EINVAL, "model.layers: must have 2 to %d entries, got %zu", MLP_MAX_LAYERS + 1,
             n);
        return;
    }
    for (size_t i = n; i < MLP_MAX_LAYERS + 1; i++) s->widths[i] = 0;
    s->nwidths = n;
    size_t in = s->widths[0], out = s->widths[n - 1];

    int act = 0, loss = s->task.family == TASK_GAUSSMIX ? MLP_LOSS_XENT : MLP_LOSS_MSE;
    get_enum(p, model, "model.activation", "activation", act_names, 2, &act);
    get_enum(p, model, "model.loss", "loss", loss_names, 2, &loss);
    s->act = (mlp_act)act;
    s->loss = (mlp_loss)loss;
    /* Default: every layer but the last is a hyperparameter (ANIL); that is
     * 3 for the paper's 1-100-100-100-1 network. */
    s->hyper_layers = n - 2;
    get_size(p, model, "model.hyper_layers", 0, (int64_t)n - 2, &s->hyper_layers);
    if (p->rc != HD_OK) return;

    if (s->task.family == TASK_SINUSOID) {
        if (in != 1)
            fail(p, HD_EINVAL, "model.layers: sinusoid tasks need input width 1, got %zu", in);
        else if (out != 1)
            fail(p, HD_EINVAL, "model.layers: sinusoid tasks need output width 1, got %zu", out);
        else if (s->loss != MLP_LOSS_MSE)
            fail(p, HD_EINVAL, "model.loss: sinusoid tasks need mse");
        s->task.in_dim = 1;
        s->task.out_dim = 1;
        s->task.classes = 0;
        return;
    }
    if (have_classes && classes != out)
        fail(p, HD_EINVAL,
             "task.classes: must equal the output width model.layers[%zu] = %zu, got %zu", n - 1,
             out, classes);
    else if (out < 2)
        fail(p, HD_EINVAL, "model.layers: gaussmix tasks need an output width >= 2, got %zu", out);
    s->task.in_dim = in;
    s->task.out_dim = out;
    s->task.classes = out;
}

static void parse_rest(pctx *p, const cJSON *root, run_spec *s) {
    const cJSON *inner = section(p, root, "inner");
    const cJSON *outer = section(p, root, "outer");
    const cJSON *method = section(p, root, "method");
    const cJSON *robust = section(p, root, "robust");
    const cJSON *eval = section(p, root, "eval");
    check_keys(p, inner, "inner", k_inner, NKEYS(k_inner));
    check_keys(p, outer, "outer", k_outer, NKEYS(k_outer));
    check_keys(p, method, "method", k_method, NKEYS(k_method));
    check_keys(p, robust, "robust", k_robust, NKEYS(k_robust));
    check_keys(p, eval, "eval", k_eval, NKEYS(k_eval));

    get_int(p, inner, "inner.steps", 1, SPEC_MAX_STEPS, &s->steps);
    get_real(p, inner, "inner.lr", 0.0, 1, INFINITY, 0, &s->inner.lr);
    get_real(p, inner, "inner.momentum", 0.0, 0, 1.0, 1, &s->inner.momentum);

    const char *opt_names[2] = {outer_kind_name(OUTER_ADAM), outer_kind_name(OUTER_SGD)};
    int opt = s->outer.kind == OUTER_SGD;
    if (get_enum(p, outer, "outer.optimizer", "optimizer", opt_names, 2, &opt))
        s->outer.kind = opt ? OUTER_SGD : OUTER_ADAM;
    get_real(p, outer, "outer.lr", 0.0, 1, INFINITY, 0, &s->outer.lr);
    get_real(p, outer, "outer.beta1", 0.0, 0, 1.0, 1, &s->outer.beta1);
    get_real(p, outer, "outer.beta2", 0.0, 0, 1.0, 1, &s->outer.beta2);
    get_real(p, outer, "outer.eps", 0.0, 1, INFINITY, 0, &s->outer.eps);

    const char *meth_names[METHOD_COUNT];
    for (int i = 0; i < METHOD_COUNT; i++) meth_names[i] = method_name((method_kind)i);
    int kind = (int)s->method.kind;
    if (get_enum(p, method, "method.name", "method", meth_names, METHOD_COUNT, &kind))
        s->method.kind = (method_kind)kind;
    get_real(p, method, "method.gamma", 0.0, 0, 1.0, 1, &s->method.gamma);
    get_int(p, method, "method.estimation_period", 0, SPEC_MAX_EPISODES,
            &s->method.estimation_period);
    get_enum(p, method, "method.pi_mode", "pi_mode", pi_names, 2, &s->method.pi_unit);
    get_real(p, method, "method.theta_init", -INFINITY, 0, INFINITY, 0, &s->method.theta_init);
    get_int(p, method, "method.neumann_n", 0, SPEC_MAX_NEUMANN_N, &s->method.neumann_n);
    get_int(p, method, "method.neumann_k", 1, SPEC_MAX_STEPS, &s->method.neumann_k);
    get_real(p, method, "method.neumann_lr", 0.0, 0, INFINITY, 0, &s->method.neumann_lr);
    /* K only matters to neumann; other methods keep their (default) K even
     * when T is shorter, so that short runs need not mention it. */
    if (p->rc == HD_OK && s->method.kind == METHOD_NEUMANN && s->method.neumann_k > s->steps)
        fail(p, HD_EINVAL, "method.neumann_k: must be in [1, inner.steps = %d], got %d", s->steps,
             s->method.neumann_k);

    get_real(p, robust, "robust.clip_norm", 0.0, 0, INFINITY, 0, &s->clip_norm);
    get_bool(p, robust, "robust.skip_nonfinite", &s->skip_nonfinite);
    get_real(p, robust, "robust.guard_loss", 0.0, 0, INFINITY, 0, &s->guard_loss);
    get_real(p, robust, "robust.blowup_loss", 0.0, 1, INFINITY, 0, &s->blowup_loss);

    get_int(p, root, "episodes", 1, SPEC_MAX_EPISODES, &s->episodes);
    get_int(p, root, "meta_batch", 1, SPEC_MAX_META_BATCH, &s->meta_batch);
    get_real(p, root, "reptile_lr", 0.0, 0, INFINITY, 0, &s->reptile_lr);
    int64_t seed;
    if (int_at(p, root, "seed", 0, (int64_t)SPEC_MAX_SEED, &seed)) s->seed = (uint64_t)seed;

    get_int(p, eval, "eval.meta_val_tasks", 0, SPEC_MAX_EVAL_TASKS, &s->meta_val_tasks);
    get_int(p, eval, "eval.meta_test_tasks", 0, SPEC_MAX_EVAL_TASKS, &s->meta_test_tasks);
    get_int(p, eval, "eval.interval", 0, SPEC_MAX_EPISODES, &s->eval_interval);

    int mode = (int)s->mode;
    if (get_enum(p, root, "mode", "mode", mode_names, 2, &mode)) s->mode = (spec_mode)mode;
    get_int(p, root, "max_staleness", 0, SPEC_MAX_STALENESS, &s->max_staleness);
    get_int(p, root, "lease_seconds", 1, SPEC_MAX_LEASE, &s->lease_seconds);
    get_int(p, root, "shards", 1, SPEC_MAX_SHARDS, &s->shards);
    get_enum(p, root, "wire_dtype", "wire_dtype", wire_names, 2, &s->wire_f32);
}

/* JSON forbids raw control bytes; cJSON accepts some, and a NUL byte or a
 * \u0000 escape would silently cut a key or a string short ("relu\u0000x"
 * read as "relu"). Returns the offending offset or len if the text is clean. */
static size_t find_bad_byte(const char *json, size_t len, int *escape) {
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)json[i];
        if (ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') {
            *escape = 0;
            return i;
        }
        if (ch == '\\' && i + 1 < len) {
            if (json[i + 1] == 'u' && i + 5 < len && memcmp(json + i + 2, "0000", 4) == 0) {
                *escape = 1;
                return i;
            }
            i++; /* skip the escaped byte: the text \\u0000 is a backslash, then "u0000" */
        }
    }
    return len;
}

hd_rc spec_parse(const char *json, size_t len, run_spec *out, hd_err *err) {
    pctx p = {HD_OK, err};
    HD_ASSERT(out != NULL);
    if (!json) {
        fail(&p, HD_EINVAL, "spec: no text");
        return p.rc;
    }
    int escape = 0;
    size_t bad = find_bad_byte(json, len, &escape);
    if (bad < len) {
        if (escape)
            fail(&p, HD_EFORMAT, "spec: \\u0000 at byte %zu is not allowed", bad);
        else
            fail(&p, HD_EFORMAT, "spec: not valid JSON: control byte 0x%02x at byte %zu",
                 (unsigned)(unsigned char)json[bad], bad);
        return p.rc;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = (end && end >= json && end <= json + len) ? (size_t)(end - json) : 0;
        fail(&p, HD_EFORMAT, "spec: not valid JSON (error at byte %zu of %zu)", at, len);
        return p.rc;
    }
    /* cJSON stops after the first value; anything but whitespace after it is
     * a second document or garbage. */
    for (const char *q = end; q && q < json + len; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            fail(&p, HD_EFORMAT, "spec: not valid JSON (trailing data at byte %zu)",
                 (size_t)(q - json));
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        fail(&p, HD_EINVAL, "spec: must be a JSON object");
        goto out;
    }

    run_spec s;
    spec_default(&s);
    check_keys(&p, root, "", k_top, NKEYS(k_top));
    parse_task_model(&p, root, &s);
    parse_rest(&p, root, &s);
    if (p.rc == HD_OK) *out = s;
out:
    cJSON_Delete(root);
    return p.rc;
}

hd_rc spec_load(const char *path, run_spec *out, hd_err *err) {
    hd_rc rc = HD_OK;
    char ebuf[128];
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        if (strerror_r(e, ebuf, sizeof ebuf) != 0) snprintf(ebuf, sizeof ebuf, "errno %d", e);
        return hd_err_set(err, HD_EIO, "%s: cannot open: %s", path, ebuf);
    }
    /* One byte more than the limit tells "exactly 1 MiB" from "larger". */
    char *buf = malloc(SPEC_MAX_FILE + 1);
    if (!buf) {
        rc = hd_err_set(err, HD_ENOMEM, "%s: out of memory", path);
        goto close_file;
    }
    size_t len = fread(buf, 1, SPEC_MAX_FILE + 1, f);
    if (ferror(f)) {
        int e = errno;
        if (strerror_r(e, ebuf, sizeof ebuf) != 0) snprintf(ebuf, sizeof ebuf, "errno %d", e);
        rc = hd_err_set(err, HD_EIO, "%s: read failed: %s", path, ebuf);
        goto free_buf;
    }
    if (len > SPEC_MAX_FILE) {
        rc = hd_err_set(err, HD_ETOOBIG, "%s: larger than %u bytes", path, SPEC_MAX_FILE);
        goto free_buf;
    }
    hd_err perr;
    hd_err_clear(&perr);
    rc = spec_parse(buf, len, out, &perr);
    if (rc != HD_OK) hd_err_set(err, rc, "%s: %s", path, perr.msg);
free_buf:
    free(buf);
close_file:
    fclose(f);
    return rc;
}

/* ---- canonical JSON ------------------------------------------------------ */

typedef struct {
    char *p;    /* NUL-terminated text */
    size_t len; /* bytes used, excluding the NUL */
    size_t cap; /* bytes allocated */
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    /* Every field is bounded (at most 17 widths of 7 digits, names from
     * fixed tables, 17-digit numbers), so the text fits SPEC_JSON_CAP. */
    HD_ASSERT(w >= 0 && (size_t)w < b->cap - b->len);
    b->len += (size_t)w;
}

/* "key":number, with a non-finite value written as null so that the text
 * stays JSON (and spec_parse refuses it). */
static void sb_real(sbuf *b, const char *sep, const char *key, double d) {
    char num[32];
    if (isfinite(d))
        fmt_num(num, sizeof num, d);
    else
        snprintf(num, sizeof num, "null");
    sb_add(b, "%s\"%s\":%s", sep, key, num);
}

static const char *name_of(const char *const *names, size_t n, int i) {
    return (i >= 0 && (size_t)i < n) ? names[i] : "unknown";
}

char *spec_to_json(const run_spec *s) {
    sbuf b = {malloc(SPEC_JSON_CAP), 0, SPEC_JSON_CAP};
    if (!b.p) return NULL;
    b.p[0] = '\0';
    sb_add(&b, "{\"task\":{\"family\":\"%s\",\"shots\":%zu,\"queries\":%zu",
           task_family_name(s->task.family), s->task.shots, s->task.queries);
    if (s->task.family == TASK_GAUSSMIX) sb_add(&b, ",\"classes\":%zu", s->task.classes);
    sb_add(&b, "},\"model\":{\"layers\":[");
    size_t nw = s->nwidths <= MLP_MAX_LAYERS + 1 ? s->nwidths : MLP_MAX_LAYERS + 1;
    for (size_t i = 0; i < nw; i++) sb_add(&b, "%s%zu", i ? "," : "", s->widths[i]);
    sb_add(&b, "],\"activation\":\"%s\",\"loss\":\"%s\",\"hyper_layers\":%zu}",
           name_of(act_names, 2, (int)s->act), name_of(loss_names, 2, (int)s->loss),
           s->hyper_layers);
    sb_add(&b, ",\"inner\":{\"steps\":%d", s->steps);
    sb_real(&b, ",", "lr", s->inner.lr);
    sb_real(&b, ",", "momentum", s->inner.momentum);
    sb_add(&b, "},\"outer\":{\"optimizer\":\"%s\"", outer_kind_name(s->outer.kind));
    sb_real(&b, ",", "lr", s->outer.lr);
    sb_real(&b, ",", "beta1", s->outer.beta1);
    sb_real(&b, ",", "beta2", s->outer.beta2);
    sb_real(&b, ",", "eps", s->outer.eps);
    sb_add(&b, "},\"method\":{\"name\":\"%s\"", method_name(s->method.kind));
    sb_real(&b, ",", "gamma", s->method.gamma);
    sb_add(&b, ",\"estimation_period\":%d,\"pi_mode\":\"%s\"", s->method.estimation_period,
           s->method.pi_unit ? "unit" : "fitted");
    sb_real(&b, ",", "theta_init", s->method.theta_init);
    sb_add(&b, ",\"neumann_n\":%d,\"neumann_k\":%d", s->method.neumann_n, s->method.neumann_k);
    sb_real(&b, ",", "neumann_lr", s->method.neumann_lr);
    sb_add(&b, "},\"robust\":{");
    sb_real(&b, "", "clip_norm", s->clip_norm);
    sb_add(&b, ",\"skip_nonfinite\":%s", s->skip_nonfinite ? "true" : "false");
    sb_real(&b, ",", "guard_loss", s->guard_loss);
    sb_real(&b, ",", "blowup_loss", s->blowup_loss);
    sb_add(&b, "},\"episodes\":%d,\"meta_batch\":%d", s->episodes, s->meta_batch);
    sb_real(&b, ",", "reptile_lr", s->reptile_lr);
    sb_add(&b, ",\"seed\":%" PRIu64, s->seed);
    sb_add(&b, ",\"eval\":{\"meta_val_tasks\":%d,\"meta_test_tasks\":%d,\"interval\":%d}",
           s->meta_val_tasks, s->meta_test_tasks, s->eval_interval);
    sb_add(&b, ",\"mode\":\"%s\",\"max_staleness\":%d,\"lease_seconds\":%d,\"shards\":%d",
           name_of(mode_names, 2, (int)s->mode), s->max_staleness, s->lease_seconds, s->shards);
    sb_add(&b, ",\"wire_dtype\":\"%s\"}", s->wire_f32 ? "f4" : "f8");
    return b.p;
}

hd_rc spec_model_new(const run_spec *s, size_t max_batch, mlp_t **out, hd_err *err) {
    return mlp_new(s->nwidths, s->widths, s->act, s->loss, s->hyper_layers, max_batch, out, err);
}
