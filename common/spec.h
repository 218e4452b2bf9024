/* The run spec: one JSON document that describes a whole run, shared by
 * `hdworker --local`, the server's POST /v1/runs and the worker daemon.
 *
 * {"task": {"family": "sinusoid", "shots": 10, "queries": 10},
 *  "model": {"layers": [1, 100, 100, 100, 1], "activation": "relu",
 *            "hyper_layers": 3, "loss": "mse"},
 *  "inner": {"steps": 30, "lr": 0.01, "momentum": 0.9},
 *  "outer": {"optimizer": "adam", "lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
 *  "method": {"name": "hyperdistill", "gamma": 0.99, "estimation_period": 50,
 *             "pi_mode": "fitted", "theta_init": 1.0,
 *             "neumann_n": 3, "neumann_k": 5, "neumann_lr": 0},
 *  "robust": {"clip_norm": 0, "skip_nonfinite": false, "guard_loss": 0, "blowup_loss": 50},
 *  "episodes": 30, "meta_batch": 10, "reptile_lr": 1.0, "seed": 1,
 *  "eval": {"meta_val_tasks": 200, "meta_test_tasks": 1000, "interval": 0},
 *  "mode": "sync", "max_staleness": 4, "lease_seconds": 30, "shards": 1,
 *  "wire_dtype": "f8"}
 *
 * Every key is optional except where a default would be meaningless
 * (task.family, model.layers); unknown keys and wrong types are refused with
 * the dotted field name in the message ("method.gamma: must be in [0, 1)").
 * The last five keys are the server's; the local runner accepts and ignores
 * them (it is always sync). */
#ifndef HD_SPEC_H
#define HD_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "inner.h"
#include "method.h"
#include "mlp.h"
#include "outer.h"
#include "task.h"

#define SPEC_MAX_EPISODES 1000000
#define SPEC_MAX_STEPS 100000
#define SPEC_MAX_META_BATCH 4096

typedef enum { SPEC_MODE_SYNC = 0, SPEC_MODE_ASYNC = 1 } spec_mode;

typedef struct {
    task_cfg task;                     /* family, shots, queries, dims */
    size_t nwidths;                    /* entries in widths, 2..MLP_MAX_LAYERS+1 */
    size_t widths[MLP_MAX_LAYERS + 1]; /* model.layers */
    mlp_act act;                       /* model.activation */
    mlp_loss loss;       /* model.loss (default: mse for sinusoid, xent for gaussmix) */
    size_t hyper_layers; /* model.hyper_layers (k) */
    int steps;           /* inner.steps T >= 1 */
    inner_cfg inner;     /* inner.lr, inner.momentum */
    outer_cfg outer;     /* outer.* */
    method_cfg method;   /* method.* */
    double clip_norm;    /* robust.clip_norm, 0 = off */
    int skip_nonfinite;  /* robust.skip_nonfinite */
    double guard_loss;   /* robust.guard_loss: also skip inner steps whose support
                                           * loss after the step exceeds this; 0 = off */
    double blowup_loss;  /* robust.blowup_loss: query loss counted as a blow-up */
    int episodes;        /* M >= 1 */
    int meta_batch;      /* B >= 1 */
    double reptile_lr;   /* >= 0, 0 disables Reptile */
    uint64_t seed;       /* run seed */
    int meta_val_tasks;  /* eval.meta_val_tasks >= 0 */
    int meta_test_tasks; /* eval.meta_test_tasks >= 0 */
    int eval_interval;   /* eval.interval: meta-validate every N episodes, 0 = at the end only */
    spec_mode mode;      /* server: sync or async */
    int max_staleness;   /* server: async posts staler than this are refused */
    int lease_seconds;   /* server: lease lifetime without heartbeat */
    int shards;          /* server: number of data shards, >= 1 */
    int wire_f32;        /* server: 1 if tensors travel as <f4 */
} run_spec;

/* Fill every field with its default (the paper's sinusoid protocol). */
void spec_default(run_spec *s);

/* Parse and validate a JSON text (len bytes, need not be NUL-terminated).
 * On success *out is fully filled; on failure it is untouched and err names
 * the field. Returns HD_OK, HD_EFORMAT (not JSON) or HD_EINVAL. */
hd_rc spec_parse(const char *json, size_t len, run_spec *out, hd_err *err);

/* Read a spec file; same contract as spec_parse plus HD_EIO. */
hd_rc spec_load(const char *path, run_spec *out, hd_err *err);

/* Canonical JSON of a spec (every key, fixed order, round-trips through
 * spec_parse to an identical struct). Returns a malloc'd NUL-terminated
 * string owned by the caller, or NULL on allocation failure. */
char *spec_to_json(const run_spec *s);

/* Create the model the spec describes for up to max_batch rows. */
hd_rc spec_model_new(const run_spec *s, size_t max_batch, mlp_t **out, hd_err *err);

#endif
