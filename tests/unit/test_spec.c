/* Unit test of common/spec.h: the defaults, the example spec, a
 * table of refused specs (each with its result code and the dotted field
 * the message must start with, and *out left untouched), boundary values
 * that must be accepted, the canonical JSON round trip (field-by-field and
 * bit-exact for doubles), spec_load on real files, and spec_model_new. */
#include "spec.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static const char example[] =
    "{\"task\": {\"family\": \"sinusoid\", \"shots\": 10, \"queries\": 10}, \"model\": "
    "{\"layers\": "
    "[1, 100, 100, 100, 1], \"activation\": \"relu\", \"hyper_layers\": 3}, \"inner\": {\"steps\": "
    "30, \"lr\": 0.01, \"momentum\": 0.9}, \"outer\": {\"optimizer\": \"adam\", \"lr\": 0.001}, "
    "\"method\": {\"name\": \"hyperdistill\", \"gamma\": 0.99, \"estimation_period\": 50}, "
    "\"episodes\": 30, \"meta_batch\": 10, \"reptile_lr\": 1.0, \"seed\": 1, \"eval\": "
    "{\"meta_val_tasks\": 200, \"meta_test_tasks\": 1000}}";

/* Bit-exact double comparison (distinguishes -0 from 0, as a round trip must). */
static int same_d(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Field-by-field comparison (memcmp of the whole struct would compare
 * padding). Returns NULL if equal, else the name of the first differing field. */
static const char *spec_diff(const run_spec *a, const run_spec *b) {
    if (a->task.family != b->task.family) return "task.family";
    if (a->task.shots != b->task.shots) return "task.shots";
    if (a->task.queries != b->task.queries) return "task.queries";
    if (a->task.in_dim != b->task.in_dim) return "task.in_dim";
    if (a->task.out_dim != b->task.out_dim) return "task.out_dim";
    if (a->task.classes != b->task.classes) return "task.classes";
    if (a->nwidths != b->nwidths) return "nwidths";
    for (size_t i = 0; i < MLP_MAX_LAYERS + 1; i++)
        if (a->widths[i] != b->widths[i]) return "widths";
    if (a->act != b->act) return "act";
    if (a->loss != b->loss) return "loss";
    if (a->hyper_layers != b->hyper_layers) return "hyper_layers";
    if (a->steps != b->steps) return "steps";
    if (!same_d(a->inner.lr, b->inner.lr)) return "inner.lr";
    if (!same_d(a->inner.momentum, b->inner.momentum)) return "inner.momentum";
    if (a->outer.kind != b->outer.kind) return "outer.kind";
    if (!same_d(a->outer.lr, b->outer.lr)) return "outer.lr";
    if (!same_d(a->outer.beta1, b->outer.beta1)) return "outer.beta1";
    if (!same_d(a->outer.beta2, b->outer.beta2)) return "outer.beta2";
    if (!same_d(a->outer.eps, b->outer.eps)) return "outer.eps";
    if (a->method.kind != b->method.kind) return "method.kind";
    if (!same_d(a->method.gamma, b->method.gamma)) return "method.gamma";
    if (a->method.pi_unit != b->method.pi_unit) return "method.pi_unit";
    if (a->method.estimation_period != b->method.estimation_period) return "method.period";
    if (!same_d(a->method.theta_init, b->method.theta_init)) return "method.theta_init";
    if (a->method.neumann_n != b->method.neumann_n) return "method.neumann_n";
    if (a->method.neumann_k != b->method.neumann_k) return "method.neumann_k";
    if (!same_d(a->method.neumann_lr, b->method.neumann_lr)) return "method.neumann_lr";
    if (!same_d(a->clip_norm, b->clip_norm)) return "clip_norm";
    if (a->skip_nonfinite != b->skip_nonfinite) return "skip_nonfinite";
    if (!same_d(a->guard_loss, b->guard_loss)) return "guard_loss";
    if (!same_d(a->blowup_loss, b->blowup_loss)) return "blowup_loss";
    if (a->episodes != b->episodes) return "episodes";
    if (a->meta_batch != b->meta_batch) return "meta_batch";
    if (!same_d(a->reptile_lr, b->reptile_lr)) return "reptile_lr";
    if (a->seed != b->seed) return "seed";
    if (a->meta_val_tasks != b->meta_val_tasks) return "meta_val_tasks";
    if (a->meta_test_tasks != b->meta_test_tasks) return "meta_test_tasks";
    if (a->eval_interval != b->eval_interval) return "eval_interval";
    if (a->mode != b->mode) return "mode";
    if (a->max_staleness != b->max_staleness) return "max_staleness";
    if (a->lease_seconds != b->lease_seconds) return "lease_seconds";
    if (a->shards != b->shards) return "shards";
    if (a->wire_f32 != b->wire_f32) return "wire_f32";
    return NULL;
}

static hd_rc parse_str(const char *json, run_spec *out, hd_err *err) {
    hd_err_clear(err);
    return spec_parse(json, strlen(json), out, err);
}

static void test_defaults(void) {
    run_spec s;
    memset(&s, 0x5a, sizeof s);
    spec_default(&s);
    CHECK_EQ_INT(s.task.family, TASK_SINUSOID);
    CHECK_EQ_INT(s.task.shots, 10);
    CHECK_EQ_INT(s.task.queries, 10);
    CHECK_EQ_INT(s.task.in_dim, 1);
    CHECK_EQ_INT(s.task.out_dim, 1);
    CHECK_EQ_INT(s.nwidths, 5);
    static const size_t w[5] = {1, 100, 100, 100, 1};
    for (size_t i = 0; i < 5; i++) CHECK_EQ_INT(s.widths[i], w[i]);
    CHECK_EQ_INT(s.act, MLP_ACT_RELU);
    CHECK_EQ_INT(s.loss, MLP_LOSS_MSE);
    CHECK_EQ_INT(s.hyper_layers, 3);
    CHECK_EQ_INT(s.steps, 30);
    CHECK(s.inner.lr == 0.01);
    CHECK(s.inner.momentum == 0.9);
    CHECK_EQ_INT(s.outer.kind, OUTER_ADAM);
    CHECK(s.outer.lr == 0.001);
    CHECK(s.outer.beta1 == 0.9);
    CHECK(s.outer.beta2 == 0.999);
    CHECK(s.outer.eps == 1e-8);
    CHECK_EQ_INT(s.method.kind, METHOD_HYPERDISTILL);
    CHECK(s.method.gamma == 0.99);
    CHECK_EQ_INT(s.method.pi_unit, 0);
    CHECK_EQ_INT(s.method.estimation_period, 50);
    CHECK(s.method.theta_init == 1.0);
    CHECK_EQ_INT(s.method.neumann_n, 3);
    CHECK_EQ_INT(s.method.neumann_k, 5);
    CHECK(s.method.neumann_lr == 0.0);
    CHECK(s.clip_norm == 0.0);
    CHECK_EQ_INT(s.skip_nonfinite, 0);
    CHECK(s.blowup_loss == 50.0);
    CHECK_EQ_INT(s.episodes, 30);
    CHECK_EQ_INT(s.meta_batch, 10);
    CHECK(s.reptile_lr == 1.0);
    CHECK_EQ_INT(s.seed, 1);
    CHECK_EQ_INT(s.meta_val_tasks, 200);
    CHECK_EQ_INT(s.meta_test_tasks, 1000);
    CHECK_EQ_INT(s.eval_interval, 0);
    CHECK_EQ_INT(s.mode, SPEC_MODE_SYNC);
    CHECK_EQ_INT(s.max_staleness, 4);
    CHECK_EQ_INT(s.lease_seconds, 30);
    CHECK_EQ_INT(s.shards, 1);
    CHECK_EQ_INT(s.wire_f32, 0);
}

static void test_example(void) {
    run_spec s, d;
    hd_err err;
    spec_default(&d);
    CHECK_EQ_INT(parse_str(example, &s, &err), HD_OK);
    CHECK_MSG(err.code == HD_OK, "%s", err.msg);
    const char *diff = spec_diff(&s, &d);
    CHECK_MSG(diff == NULL, "example differs from the defaults in %s", diff);

    /* The minimal spec: only the two required fields; everything else is
     * the default, and hyper_layers defaults to all but the last layer. */
    CHECK_EQ_INT(
        parse_str("{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,100,100,100,1]}}",
                  &s, &err),
        HD_OK);
    diff = spec_diff(&s, &d);
    CHECK_MSG(diff == NULL, "minimal spec differs from the defaults in %s", diff);
    CHECK_EQ_INT(
        parse_str("{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,40,40,1]}}", &s,
                  &err),
        HD_OK);
    CHECK_EQ_INT(s.nwidths, 4);
    CHECK_EQ_INT(s.hyper_layers, 2);
    CHECK_EQ_INT(s.widths[3], 1);
    CHECK_EQ_INT(s.widths[4], 0);

    /* gaussmix: dims from the model, xent by default, classes = last width. */
    CHECK_EQ_INT(parse_str("{\"task\":{\"family\":\"gaussmix\",\"shots\":5,\"queries\":15},"
                           "\"model\":{\"layers\":[32,64,5],\"activation\":\"tanh\"}}",
                           &s, &err),
                 HD_OK);
    CHECK_MSG(err.code == HD_OK, "%s", err.msg);
    CHECK_EQ_INT(s.task.family, TASK_GAUSSMIX);
    CHECK_EQ_INT(s.task.in_dim, 32);
    CHECK_EQ_INT(s.task.out_dim, 5);
    CHECK_EQ_INT(s.task.classes, 5);
    CHECK_EQ_INT(s.task.shots, 5);
    CHECK_EQ_INT(s.task.queries, 15);
    CHECK_EQ_INT(s.loss, MLP_LOSS_XENT);
    CHECK_EQ_INT(s.act, MLP_ACT_TANH);
    CHECK_EQ_INT(s.hyper_layers, 1);
    CHECK_EQ_INT(parse_str("{\"task\":{\"family\":\"gaussmix\",\"classes\":5},"
                           "\"model\":{\"layers\":[32,5],\"loss\":\"mse\",\"hyper_layers\":0}}",
                           &s, &err),
                 HD_OK);
    CHECK_EQ_INT(s.loss, MLP_LOSS_MSE);
    CHECK_EQ_INT(s.hyper_layers, 0);

    /* The text need not be NUL-terminated: parse a prefix of a buffer. */
    char buf[256];
    const char *txt =
        "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,8,1]},\"seed\":7}";
    size_t n = strlen(txt);
    memcpy(buf, txt, n);
    memset(buf + n, 'x', sizeof buf - n);
    hd_err_clear(&err);
    CHECK_EQ_INT(spec_parse(buf, n, &s, &err), HD_OK);
    CHECK_EQ_INT(s.seed, 7);
    /* Surrounding whitespace and a NULL err are fine. */
    CHECK_EQ_INT(
        spec_parse(
            " \n{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,1]}}\r\n\t",
            strlen(" \n{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,1]}}\r\n\t"),
            &s, NULL),
        HD_OK);
}

/* Boundary values that must be accepted. */
static void test_accepted_bounds(void) {
#define S(x) "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,4,1]}" x "}"
    static const char *const ok[] = {
        S(",\"method\":{\"gamma\":0}"),
        S(",\"method\":{\"gamma\":0.9999}"),
        S(",\"inner\":{\"momentum\":0,\"steps\":100000}"),
        S(",\"inner\":{\"steps\":1},\"method\":{\"name\":\"neumann\",\"neumann_k\":1,\"neumann_n\":"
          "0}"),
        S(",\"inner\":{\"steps\":3}"), /* K = 5 > T is fine for non-neumann methods */
        S(",\"seed\":9007199254740992"),
        S(",\"seed\":0"),
        S(",\"episodes\":1e3"), /* integral value in exponent form */
        S(",\"reptile_lr\":0,\"method\":{\"estimation_period\":0,\"theta_init\":-3.5}"),
        S(",\"robust\":{\"clip_norm\":0,\"skip_nonfinite\":true,\"blowup_loss\":1e-300}"),
        S(",\"eval\":{\"meta_val_tasks\":0,\"meta_test_tasks\":1000000,\"interval\":5}"),
        S(",\"mode\":\"async\",\"max_staleness\":0,\"lease_seconds\":86400,\"shards\":1024,"
          "\"wire_dtype\":\"f4\""),
        S(",\"meta_batch\":4096"),
        S(",\"outer\":{\"optimizer\":\"sgd\",\"beta1\":0,\"beta2\":0}"),
        "{\"task\":{\"family\":\"sinusoid\",\"shots\":100000,\"queries\":1},"
        "\"model\":{\"layers\":[1,1048576,1],\"hyper_layers\":1}}",
        "{\"model\":{\"layers\":[1,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,1]},\"task\":{\"family\":"
        "\"sinusoid\"}}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        run_spec s;
        hd_err err;
        hd_rc rc = parse_str(ok[i], &s, &err);
        CHECK_MSG(rc == HD_OK, "case %zu: %s: %s", i, ok[i], err.msg);
    }
    run_spec s;
    hd_err err;
    CHECK_EQ_INT(parse_str(S(",\"seed\":9007199254740992"), &s, &err), HD_OK);
    CHECK(s.seed == 9007199254740992ULL);
    CHECK_EQ_INT(
        parse_str(
            S(",\"mode\":\"async\",\"wire_dtype\":\"f4\",\"robust\":{\"skip_nonfinite\":true}"), &s,
            &err),
        HD_OK);
    CHECK_EQ_INT(s.mode, SPEC_MODE_ASYNC);
    CHECK_EQ_INT(s.wire_f32, 1);
    CHECK_EQ_INT(s.skip_nonfinite, 1);
    CHECK_EQ_INT(parse_str(S(",\"method\":{\"pi_mode\":\"unit\",\"name\":\"rmd\"}"), &s, &err),
                 HD_OK);
    CHECK_EQ_INT(s.method.pi_unit, 1);
    CHECK_EQ_INT(s.method.kind, METHOD_RMD);
}

typedef struct {
    const char *json; /* the spec text */
    hd_rc rc;         /* expected result */
    const char *what; /* the message must start with this (the dotted field) */
} bad_case;

static const bad_case bad[] = {
    /* the cases named in the issue */
    {S(",\"method\":{\"name\":\"sgdx\"}"), HD_EINVAL, "method.name: unknown method 'sgdx'"},
    {S(",\"inner\":{\"steps\":-3}"), HD_EINVAL, "inner.steps"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[3,10,1]}}", HD_EINVAL,
     "model.layers: sinusoid tasks need input width 1, got 3"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,10,2]}}", HD_EINVAL,
     "model.layers"},
    {S(",\"method\":{\"gamma\":1}"), HD_EINVAL, "method.gamma: must be in [0, 1)"},
    {S(",\"method\":{\"gamma\":-0.1}"), HD_EINVAL, "method.gamma"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,4,4,4,1],\"hyper_layers\":4}}",
     HD_EINVAL, "model.hyper_layers"},
    {S(",\"epochs\":3"), HD_EINVAL, "epochs: unknown field"},
    {S(",\"inner\":{\"lrate\":0.1}"), HD_EINVAL, "inner.lrate: unknown field"},
    {S(",\"inner\":{\"lr\":\"0.01\"}"), HD_EINVAL, "inner.lr: must be a number"},
    {S(",\"inner\":{\"steps\":2.5}"), HD_EINVAL, "inner.steps: must be an integer"},
    {S(",\"inner\":{\"momentum\":1}"), HD_EINVAL, "inner.momentum"},
    {S(",\"inner\":{\"lr\":0}"), HD_EINVAL, "inner.lr"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[]}}", HD_EINVAL, "model.layers"},
    {"{\"task\":", HD_EFORMAT, "spec: not valid JSON"},
    {"not json", HD_EFORMAT, "spec: not valid JSON"},
    {"", HD_EFORMAT, "spec: not valid JSON"},
    {"[1, 2]", HD_EINVAL, "spec: must be a JSON object"},
    {S(",\"inner\":{\"steps\":4},\"method\":{\"name\":\"neumann\",\"neumann_k\":5}"), HD_EINVAL,
     "method.neumann_k"},
    {S(",\"mode\":\"foo\""), HD_EINVAL, "mode: unknown mode 'foo'"},
    {S(",\"wire_dtype\":\"f2\""), HD_EINVAL, "wire_dtype"},
    /* required fields */
    {"{\"model\":{\"layers\":[1,4,1]}}", HD_EINVAL, "task.family: required"},
    {"{\"task\":{\"family\":\"sinusoid\"}}", HD_EINVAL, "model.layers: required"},
    {"{\"task\":{\"shots\":5},\"model\":{\"layers\":[1,4,1]}}", HD_EINVAL, "task.family"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"activation\":\"relu\"}}", HD_EINVAL,
     "model.layers"},
    /* task */
    {"{\"task\":{\"family\":\"cosine\"},\"model\":{\"layers\":[1,4,1]}}", HD_EINVAL,
     "task.family: unknown family 'cosine'"},
    {"{\"task\":{\"family\":\"sinusoid\",\"shots\":0},\"model\":{\"layers\":[1,4,1]}}", HD_EINVAL,
     "task.shots"},
    {"{\"task\":{\"family\":\"sinusoid\",\"queries\":100001},\"model\":{\"layers\":[1,4,1]}}",
     HD_EINVAL, "task.queries"},
    {"{\"task\":{\"family\":\"sinusoid\",\"classes\":2},\"model\":{\"layers\":[1,4,1]}}", HD_EINVAL,
     "task.classes"},
    {"{\"task\":{\"family\":\"gaussmix\",\"classes\":4},\"model\":{\"layers\":[8,4,5]}}", HD_EINVAL,
     "task.classes"},
    {"{\"task\":{\"family\":\"gaussmix\"},\"model\":{\"layers\":[8,4,1]}}", HD_EINVAL,
     "model.layers"},
    {"{\"task\":3,\"model\":{\"layers\":[1,4,1]}}", HD_EINVAL, "task: must be an object"},
    {"{\"task\":{\"family\":1},\"model\":{\"layers\":[1,4,1]}}", HD_EINVAL,
     "task.family: must be a string"},
    /* model */
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1]}}", HD_EINVAL, "model.layers"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":"
     "[1,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,1]}}",
     HD_EINVAL, "model.layers"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,0,1]}}", HD_EINVAL,
     "model.layers[1]"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,1048577,1]}}", HD_EINVAL,
     "model.layers[1]"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,2.5,1]}}", HD_EINVAL,
     "model.layers[1]: must be an integer"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":5}}", HD_EINVAL,
     "model.layers: must be an array"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,4,1],\"activation\":\"gelu\"}}",
     HD_EINVAL, "model.activation"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,4,1],\"loss\":\"xent\"}}",
     HD_EINVAL, "model.loss"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,4,1],\"hyper_layers\":-1}}",
     HD_EINVAL, "model.hyper_layers"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,4,1],\"depth\":3}}", HD_EINVAL,
     "model.depth: unknown field"},
    /* inner, outer */
    {S(",\"inner\":{\"steps\":100001}"), HD_EINVAL, "inner.steps"},
    {S(",\"inner\":{\"lr\":1e999}"), HD_EINVAL, "inner.lr: must be finite"},
    {S(",\"inner\":{\"lr\":-1e999}"), HD_EINVAL, "inner.lr: must be finite"},
    {S(",\"inner\":5"), HD_EINVAL, "inner: must be an object"},
    {S(",\"outer\":{\"optimizer\":\"rmsprop\"}"), HD_EINVAL, "outer.optimizer"},
    {S(",\"outer\":{\"lr\":-0.001}"), HD_EINVAL, "outer.lr"},
    {S(",\"outer\":{\"beta1\":1}"), HD_EINVAL, "outer.beta1"},
    {S(",\"outer\":{\"beta2\":1.5}"), HD_EINVAL, "outer.beta2"},
    {S(",\"outer\":{\"eps\":0}"), HD_EINVAL, "outer.eps"},
    /* method */
    {S(",\"method\":{\"name\":7}"), HD_EINVAL, "method.name: must be a string"},
    {S(",\"method\":{\"pi_mode\":\"auto\"}"), HD_EINVAL, "method.pi_mode"},
    {S(",\"method\":{\"estimation_period\":-1}"), HD_EINVAL, "method.estimation_period"},
    {S(",\"method\":{\"theta_init\":\"x\"}"), HD_EINVAL, "method.theta_init"},
    {S(",\"method\":{\"neumann_n\":101}"), HD_EINVAL, "method.neumann_n"},
    {S(",\"method\":{\"neumann_k\":0}"), HD_EINVAL, "method.neumann_k"},
    {S(",\"method\":{\"neumann_lr\":-1}"), HD_EINVAL, "method.neumann_lr"},
    {S(",\"method\":{\"Gamma\":0.5}"), HD_EINVAL, "method.Gamma: unknown field"},
    /* robust */
    {S(",\"robust\":{\"skip_nonfinite\":1}"), HD_EINVAL,
     "robust.skip_nonfinite: must be a boolean"},
    {S(",\"robust\":{\"blowup_loss\":0}"), HD_EINVAL, "robust.blowup_loss"},
    {S(",\"robust\":{\"clip_norm\":-1}"), HD_EINVAL, "robust.clip_norm"},
    /* top level scalars */
    {S(",\"episodes\":0"), HD_EINVAL, "episodes"},
    {S(",\"episodes\":null"), HD_EINVAL, "episodes: must be an integer"},
    {S(",\"meta_batch\":4097"), HD_EINVAL, "meta_batch"},
    {S(",\"reptile_lr\":-0.5"), HD_EINVAL, "reptile_lr"},
    {S(",\"seed\":-1"), HD_EINVAL, "seed"},
    {S(",\"seed\":9007199254740994"), HD_EINVAL, "seed"},
    {S(",\"seed\":true"), HD_EINVAL, "seed: must be an integer"},
    {S(",\"eval\":{\"meta_test_tasks\":1000001}"), HD_EINVAL, "eval.meta_test_tasks"},
    {S(",\"eval\":{\"interval\":-1}"), HD_EINVAL, "eval.interval"},
    {S(",\"eval\":{\"tasks\":1}"), HD_EINVAL, "eval.tasks: unknown field"},
    {S(",\"max_staleness\":-1"), HD_EINVAL, "max_staleness"},
    {S(",\"lease_seconds\":0"), HD_EINVAL, "lease_seconds"},
    {S(",\"lease_seconds\":86401"), HD_EINVAL, "lease_seconds"},
    {S(",\"shards\":0"), HD_EINVAL, "shards"},
    {S(",\"shards\":1025"), HD_EINVAL, "shards"},
    {S(",\"mode\":1"), HD_EINVAL, "mode: must be a string"},
    /* strictness of the JSON itself */
    {S(",\"seed\":1,\"seed\":2"), HD_EINVAL, "seed: duplicate field"},
    {S(",\"Seed\":1"), HD_EINVAL, "Seed: unknown field"},
    {S("") " x", HD_EFORMAT, "spec: not valid JSON"},
    {S("") S(""), HD_EFORMAT, "spec: not valid JSON"},
    {S(",\"model2\":{\"\\u0000\":1}"), HD_EFORMAT, "spec: \\u0000"},
    {"{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,4,1],"
     "\"activation\":\"relu\\u0000x\"}}",
     HD_EFORMAT, "spec: \\u0000"},
    {S(",\"mode\":\"sy\001nc\""), HD_EFORMAT, "spec: not valid JSON"},
    {S(",\"mode\":\"sy\\nnc\""), HD_EINVAL, "mode: unknown mode 'sy?nc'"},
};

static void test_refused(void) {
    size_t n = sizeof bad / sizeof bad[0];
    CHECK(n >= 25);
    for (size_t i = 0; i < n; i++) {
        run_spec out, before;
        memset(&out, 0x5a, sizeof out);
        memcpy(&before, &out, sizeof out);
        hd_err err;
        hd_rc rc = parse_str(bad[i].json, &out, &err);
        CHECK_MSG(rc == bad[i].rc, "case %zu: %s: rc %s, want %s (%s)", i, bad[i].json,
                  hd_rc_name(rc), hd_rc_name(bad[i].rc), err.msg);
        CHECK_MSG(err.code == rc, "case %zu: err.code %d", i, (int)err.code);
        CHECK_MSG(strncmp(err.msg, bad[i].what, strlen(bad[i].what)) == 0,
                  "case %zu: %s: message '%s' should start with '%s'", i, bad[i].json, err.msg,
                  bad[i].what);
        CHECK_MSG(strchr(err.msg, '\n') == NULL, "case %zu: newline in message", i);
        /* A refused parse leaves *out untouched (byte for byte, padding too). */
        CHECK_MSG(memcmp(&out, &before, sizeof out) == 0, "case %zu: *out was modified", i);
    }
    /* An embedded NUL byte is refused (before it could cut a key short). */
    static const char nul[] =
        "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,4,1]}}\0";
    run_spec s;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(spec_parse(nul, sizeof nul - 1, &s, &err), HD_EFORMAT);
    CHECK(strncmp(err.msg, "spec: not valid JSON", 20) == 0);
    hd_err_clear(&err);
    CHECK_EQ_INT(spec_parse(NULL, 0, &s, &err), HD_EINVAL);
    /* Long and binary keys are shown bounded and printable. */
    char big[2048];
    int len = snprintf(big, sizeof big, S(",\"%s\\u00e9\\t\":1"),
                       "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
                       "kkkkkkkkkkkkkkkkkkkkk");
    CHECK(len > 0 && (size_t)len < sizeof big);
    CHECK_EQ_INT(parse_str(big, &s, &err), HD_EINVAL);
    CHECK(strstr(err.msg, "unknown field") != NULL);
    CHECK(strlen(err.msg) < 120);
    for (const char *q = err.msg; *q; q++)
        CHECK((unsigned char)*q >= 0x20 && (unsigned char)*q < 0x7f);
}

/* spec -> JSON -> spec gives an identical struct, and the JSON is a fixed point. */
static void check_round_trip(const run_spec *s, const char *label) {
    char *j1 = spec_to_json(s);
    CHECK(j1 != NULL);
    if (!j1) return;
    run_spec r;
    hd_err err;
    hd_rc rc = parse_str(j1, &r, &err);
    CHECK_MSG(rc == HD_OK, "%s: %s: %s", label, j1, err.msg);
    if (rc == HD_OK) {
        const char *diff = spec_diff(s, &r);
        CHECK_MSG(diff == NULL, "%s: round trip differs in %s: %s", label, diff, j1);
        char *j2 = spec_to_json(&r);
        CHECK(j2 != NULL && strcmp(j1, j2) == 0);
        free(j2);
    }
    free(j1);
}

static void test_round_trip(void) {
    run_spec s;
    spec_default(&s);
    check_round_trip(&s, "default");
    char *j = spec_to_json(&s);
    CHECK(j != NULL);
    if (j) {
        /* Canonical text: every key, shortest exact numbers. */
        CHECK(strstr(j, "\"layers\":[1,100,100,100,1]") != NULL);
        CHECK(strstr(j, "\"lr\":0.01,") != NULL);
        CHECK(strstr(j, "\"eps\":1e-08") != NULL);
        CHECK(strstr(j, "\"wire_dtype\":\"f8\"}") != NULL);
        CHECK(strstr(j, "\"skip_nonfinite\":false") != NULL);
        CHECK(strstr(j, "\"interval\":0") != NULL);
        CHECK(strstr(j, "\"blowup_loss\":50}") != NULL);
        free(j);
    }

    /* Every field away from its default, with awkward doubles. */
    hd_err err;
    CHECK_EQ_INT(
        parse_str("{\"task\":{\"family\":\"gaussmix\",\"shots\":7,\"queries\":13,\"classes\":3},"
                  "\"model\":{\"layers\":[16,32,32,3],\"activation\":\"tanh\",\"loss\":\"mse\","
                  "\"hyper_layers\":1},"
                  "\"inner\":{\"steps\":12,\"lr\":0.30000000000000004,\"momentum\":0.1},"
                  "\"outer\":{\"optimizer\":\"sgd\",\"lr\":1e-300,\"beta1\":0.5,\"beta2\":0.25,"
                  "\"eps\":2.2250738585072014e-308},"
                  "\"method\":{\"name\":\"neumann\",\"gamma\":0.9999999999999999,"
                  "\"estimation_period\":7,\"pi_mode\":\"unit\",\"theta_init\":-0.0,"
                  "\"neumann_n\":100,\"neumann_k\":12,\"neumann_lr\":1.7976931348623157e308},"
                  "\"robust\":{\"clip_norm\":3.14159,\"skip_nonfinite\":true,\"blowup_loss\":1e6},"
                  "\"episodes\":999999,\"meta_batch\":4096,\"reptile_lr\":0.123456789012345678,"
                  "\"seed\":9007199254740991,"
                  "\"eval\":{\"meta_val_tasks\":0,\"meta_test_tasks\":5,\"interval\":3},"
                  "\"mode\":\"async\",\"max_staleness\":1000000,\"lease_seconds\":86400,"
                  "\"shards\":1024,\"wire_dtype\":\"f4\"}",
                  &s, &err),
        HD_OK);
    CHECK_MSG(err.code == HD_OK, "%s", err.msg);
    CHECK(s.method.theta_init == 0.0 && signbit(s.method.theta_init));
    CHECK(s.inner.lr == 0.1 + 0.2);
    check_round_trip(&s, "everything");

    /* Random doubles must survive exactly too. */
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 200; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double u = (double)(x >> 11) * 0x1.0p-53; /* [0, 1) */
        spec_default(&s);
        s.method.gamma = u;
        s.inner.momentum = u * 0.999;
        s.inner.lr = u + 1e-9;
        s.method.theta_init = (u - 0.5) * 1e10;
        s.clip_norm = u * 1e-200;
        s.seed = x >> 11;
        check_round_trip(&s, "random");
    }
}

static void write_file(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(data, 1, len, f) == len);
    fclose(f);
}

static void test_load(void) {
    char path[] = "/tmp/test_spec_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);

    run_spec s, d;
    hd_err err;
    spec_default(&d);
    write_file(path, example, strlen(example));
    hd_err_clear(&err);
    CHECK_EQ_INT(spec_load(path, &s, &err), HD_OK);
    CHECK_MSG(spec_diff(&s, &d) == NULL, "loaded spec differs");

    /* A bad file: the message starts with the path, then names the field. */
    const char *badspec = S(",\"method\":{\"gamma\":1}");
    write_file(path, badspec, strlen(badspec));
    run_spec before;
    memset(&s, 0x33, sizeof s);
    memcpy(&before, &s, sizeof s);
    hd_err_clear(&err);
    CHECK_EQ_INT(spec_load(path, &s, &err), HD_EINVAL);
    CHECK(strncmp(err.msg, path, strlen(path)) == 0);
    CHECK(strstr(err.msg, ": method.gamma: ") != NULL);
    CHECK(memcmp(&s, &before, sizeof s) == 0);

    /* Larger than 1 MiB: refused. Exactly 1 MiB (spaces around a spec): read. */
    size_t big = (1u << 20) + 1;
    char *buf = malloc(big);
    CHECK(buf != NULL);
    if (buf) {
        memset(buf, ' ', big);
        size_t n = strlen(example);
        memcpy(buf, example, n);
        write_file(path, buf, big);
        hd_err_clear(&err);
        CHECK_EQ_INT(spec_load(path, &s, &err), HD_ETOOBIG);
        CHECK(strncmp(err.msg, path, strlen(path)) == 0);
        write_file(path, buf, big - 1);
        hd_err_clear(&err);
        CHECK_EQ_INT(spec_load(path, &s, &err), HD_OK);
        free(buf);
    }

    /* Empty file: not JSON. */
    write_file(path, "", 0);
    hd_err_clear(&err);
    CHECK_EQ_INT(spec_load(path, &s, &err), HD_EFORMAT);

    unlink(path);
    hd_err_clear(&err);
    memcpy(&before, &s, sizeof s);
    CHECK_EQ_INT(spec_load(path, &s, &err), HD_EIO);
    CHECK(strncmp(err.msg, path, strlen(path)) == 0);
    CHECK(memcmp(&s, &before, sizeof s) == 0);
    /* A directory cannot be read as a spec. */
    hd_err_clear(&err);
    CHECK_EQ_INT(spec_load("/tmp", &s, &err), HD_EIO);
}

static void test_model_new(void) {
    run_spec s;
    spec_default(&s);
    mlp_t *m = NULL;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(spec_model_new(&s, 10, &m, &err), HD_OK);
    CHECK(m != NULL);
    if (m) {
        CHECK_EQ_INT(mlp_n_layers(m), 4);
        CHECK_EQ_INT(mlp_hyper_layers(m), 3);
        CHECK_EQ_INT(mlp_in_dim(m), 1);
        CHECK_EQ_INT(mlp_out_dim(m), 1);
        CHECK_EQ_INT(mlp_max_batch(m), 10);
        /* lam: (1*100+100) + 2*(100*100+100); w: 100*1+1. */
        CHECK_EQ_INT(mlp_n_lam(m), 200 + 2 * 10100);
        CHECK_EQ_INT(mlp_n_w(m), 101);
        CHECK_EQ_INT(mlp_activation(m), MLP_ACT_RELU);
        CHECK_EQ_INT(mlp_loss_kind(m), MLP_LOSS_MSE);
    }
    mlp_free(m);
    m = NULL;
    CHECK_EQ_INT(parse_str("{\"task\":{\"family\":\"gaussmix\"},\"model\":{\"layers\":[6,5,4],"
                           "\"activation\":\"tanh\"}}",
                           &s, &err),
                 HD_OK);
    CHECK_EQ_INT(spec_model_new(&s, 3, &m, &err), HD_OK);
    if (m) {
        CHECK_EQ_INT(mlp_in_dim(m), 6);
        CHECK_EQ_INT(mlp_out_dim(m), 4);
        CHECK_EQ_INT(mlp_n_lam(m), 35);
        CHECK_EQ_INT(mlp_n_w(m), 24);
        CHECK_EQ_INT(mlp_loss_kind(m), MLP_LOSS_XENT);
        CHECK_EQ_INT(mlp_activation(m), MLP_ACT_TANH);
    }
    mlp_free(m);
    m = NULL;
    hd_err_clear(&err);
    CHECK_EQ_INT(spec_model_new(&s, 0, &m, &err), HD_EINVAL);
    CHECK(m == NULL);
}
#undef S

int main(void) {
    test_defaults();
    test_example();
    test_accepted_bounds();
    test_refused();
    test_round_trip();
    test_load();
    test_model_new();
    return check_finish("test_spec");
}
