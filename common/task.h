/* Task families (ALGORITHM.md section 8). A task of (run seed, stream,
 * episode, slot) is a pure function of those numbers, so that any worker can
 * run any slot. Streams separate meta-training, meta-validation and
 * meta-test tasks. Inputs are row-major (n, in_dim), targets (n, out_dim). */
#ifndef HD_TASK_H
#define HD_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum { TASK_SINUSOID = 0, TASK_GAUSSMIX = 1 } task_family;
typedef enum { TASK_STREAM_TRAIN = 0, TASK_STREAM_VAL = 1, TASK_STREAM_TEST = 2 } task_stream;

typedef struct {
    task_family family;
    size_t shots;   /* support examples (the inner minibatch at every step) */
    size_t queries; /* query examples (D_val) */
    size_t in_dim;  /* input width the family produces */
    size_t out_dim; /* output width (targets per example) */
    size_t classes; /* gaussmix: number of classes (= out_dim) */
} task_cfg;

typedef struct {
    size_t n_s, n_q, in_dim, out_dim;
    double *xs, *ys;   /* support (n_s, in_dim), (n_s, out_dim) */
    double *xq, *yq;   /* query */
    double amp, phase; /* sinusoid parameters (0 for other families) */
} task_t;

/* "sinusoid" or "gaussmix"; returns 0 or -1. */
int task_family_parse(const char *s, task_family *out);
const char *task_family_name(task_family f);
/* Natural input and output widths of a family (sinusoid: 1, 1; gaussmix:
 * in_dim given by the model, out_dim = classes). */

/* Allocate a task's arrays. Returns HD_OK or HD_ENOMEM. */
hd_rc task_alloc(task_t *t, size_t n_s, size_t n_q, size_t in_dim, size_t out_dim, hd_err *err);
/* Free the arrays; safe on a zeroed task. */
void task_clear(task_t *t);

/* Fill t (allocated with the cfg's sizes) with the task of (seed, stream,
 * episode, slot).
 * sinusoid: y = A sin(x + p), A ~ U(0.1, 5), p ~ U(0, pi), x ~ U(-5, 5).
 * gaussmix: a synthetic classification task for wide inputs: `classes`
 * Gaussian clusters in R^in_dim with task-specific means, one-hot targets. */
void task_make(const task_cfg *c, uint64_t seed, task_stream stream, uint64_t episode,
               uint64_t slot, task_t *t);

#endif
