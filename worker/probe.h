/* `hdworker probe`: every method's hypergradient at the last step of one
 * episode of one given task, with one fixed lam and phi, and the cosine of
 * each to the exact (rmd) hypergradient: the paper's Figure 3a measure. */
#ifndef HD_PROBE_H
#define HD_PROBE_H

#include "spec.h"

/* One probe: hypergradients of every method (g[k] has n_lam numbers, for
 * method_kind k), the LinearEstimation samples of the episode (x, y: T each)
 * and the theta they fit. */
typedef struct {
    size_t n_lam;
    int T;
    double *g[METHOD_COUNT]; /* owned */
    long vjps[METHOD_COUNT];
    double cosine[METHOD_COUNT]; /* cosine to rmd */
    double theta;                /* fitted on this episode (theta_init if no fit) */
    double *x, *y;               /* owned, T each */
} probe_result;

/* Compute a probe on a task (arrays as in task.h). Returns HD_OK,
 * HD_EINVAL or HD_ENOMEM. */
hd_rc probe_run(const run_spec *sp, const double *lam, const double *phi, const task_t *task,
                probe_result *out, hd_err *err);
void probe_result_clear(probe_result *r);

/* The command line: argv[0] is "probe". Returns the exit status. */
int probe_main(int argc, char **argv);

#endif
