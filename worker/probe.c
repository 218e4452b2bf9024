/* The probe: same state, every method, cosine to rmd. */
#include "probe.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "episode.h"
#include "npz.h"
#include "vec.h"

void probe_result_clear(probe_result *r) {
    for (int k = 0; k < METHOD_COUNT; k++) free(r->g[k]);
    free(r->x);
    free(r->y);
    memset(r, 0, sizeof *r);
}

hd_rc probe_run(const run_spec *sp, const double *lam, const double *phi, const task_t *task,
                probe_result *out, hd_err *err) {
    hd_rc rc;
    size_t rows = task->n_s + task->n_q; /* support and query stacked */
    mlp_t *m = NULL;
    episode_t *e = NULL;
    probe_result r;
    memset(&r, 0, sizeof r);
    method_cfg mc = sp->method;
    if ((rc = spec_model_new(sp, rows, &m, err)) != HD_OK) return rc;
    if ((rc = episode_new(m, &sp->inner, &mc, sp->steps, task->n_s, task->n_q, &e, err)) != HD_OK)
        goto fail;
    size_t nl = mlp_n_lam(m);
    r.n_lam = nl;
    r.T = sp->steps;
    r.x = calloc((size_t)sp->steps, sizeof(double));
    r.y = calloc((size_t)sp->steps, sizeof(double));
    if (!r.x || !r.y) {
        rc = hd_err_set(err, HD_ENOMEM, "probe: out of memory");
        goto fail;
    }
    /* theta from this episode's LinearEstimation samples. */
    r.theta = sp->method.theta_init;
    linest_sums sums;
    linest_init(&sums);
    episode_begin(e, phi, task->xs, task->ys, task->xq, task->yq);
    if (episode_estimate(e, lam, sp->method.gamma, r.x, r.y, &sums, NULL, NULL) == HD_OK)
        linest_fit(&sums, &r.theta);
    for (int k = 0; k < METHOD_COUNT; k++) {
        mc.kind = (method_kind)k;
        if (mc.neumann_k > sp->steps) mc.neumann_k = sp->steps;
        if (!(r.g[k] = calloc(nl ? nl : 1, sizeof(double)))) {
            rc = hd_err_set(err, HD_ENOMEM, "probe: out of memory");
            goto fail;
        }
        episode_begin(e, phi, task->xs, task->ys, task->xq, task->yq);
        for (int t = 1; t <= sp->steps; t++) {
            episode_info info;
            episode_step(e, lam, r.theta, 0, r.g[k], &info);
            r.vjps[k] += info.vjps;
        }
    }
    for (int k = 0; k < METHOD_COUNT; k++) r.cosine[k] = vec_cosine(nl, r.g[k], r.g[METHOD_RMD]);
    episode_free(e);
    mlp_free(m);
    *out = r;
    return HD_OK;
fail:
    probe_result_clear(&r);
    episode_free(e);
    mlp_free(m);
    return rc;
}

/* Rows of a task array: (n, d) or, for d == 1, (n,). */
static int task_array(const npz_file *z, const char *name, size_t d, const double **data,
                      size_t *rows) {
    npy_header h;
    const double *p = npz_get(z, name, &h);
    if (!p) {
        fprintf(stderr, "hdworker probe: --task: missing array '%s' (need xs, ys, xq, yq)\n", name);
        return -1;
    }
    size_t n;
    if (h.ndim == 2 && h.shape[1] == d)
        n = h.shape[0];
    else if (h.ndim == 1 && d == 1)
        n = h.shape[0];
    else {
        fprintf(stderr, "hdworker probe: --task: array '%s' must have shape (n, %zu)\n", name, d);
        return -1;
    }
    if (n < 1 || n > 1000000) {
        fprintf(stderr, "hdworker probe: --task: array '%s' has %zu rows\n", name, n);
        return -1;
    }
    *data = p;
    *rows = n;
    return 0;
}

static int load_exact(const char *path, size_t n, const char *what, double **out) {
    hd_err err = {0};
    npy_header h;
    if (npy_load(path, n + 1, &h, out, &err) != HD_OK) {
        fprintf(stderr, "hdworker probe: %s: %s\n", what, err.msg);
        return -1;
    }
    if (h.count != n || !vec_all_finite(n, *out)) {
        fprintf(stderr, "hdworker probe: %s: %s must hold %zu finite numbers (has %zu)\n", what,
                path, n, h.count);
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

static int write_outputs(const char *dir, const probe_result *r) {
    hd_err err = {0};
    char path[4096];
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "hdworker probe: cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    for (int k = 0; k < METHOD_COUNT; k++) {
        snprintf(path, sizeof path, "%s/%s.npy", dir, method_name((method_kind)k));
        if (npy_save_vec(path, NPY_F64, r->n_lam, r->g[k], &err) != HD_OK) {
            fprintf(stderr, "hdworker probe: %s\n", err.msg);
            return -1;
        }
    }
    snprintf(path, sizeof path, "%s/probe.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "hdworker probe: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "{\"steps\": %d, \"theta\": %.17g, \"methods\": {", r->T, r->theta);
    for (int k = 0; k < METHOD_COUNT; k++)
        fprintf(f, "%s\"%s\": {\"cosine_to_rmd\": %.17g, \"norm\": %.17g, \"vjps\": %ld}",
                k ? ", " : "", method_name((method_kind)k), r->cosine[k],
                vec_nrm2(r->n_lam, r->g[k]), r->vjps[k]);
    fputs("}, \"samples\": {\"x\": [", f);
    for (int s = 0; s < r->T; s++) fprintf(f, "%s%.17g", s ? ", " : "", r->x[s]);
    fputs("], \"y\": [", f);
    for (int s = 0; s < r->T; s++) fprintf(f, "%s%.17g", s ? ", " : "", r->y[s]);
    fputs("]}}\n", f);
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad) fprintf(stderr, "hdworker probe: write %s failed\n", path);
    return bad ? -1 : 0;
}

int probe_main(int argc, char **argv) {
    const char *spec_path = NULL, *lam_path = NULL, *phi_path = NULL, *task_path = NULL,
               *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char **dst = NULL;
        if (strcmp(argv[i], "--spec") == 0)
            dst = &spec_path;
        else if (strcmp(argv[i], "--lambda") == 0)
            dst = &lam_path;
        else if (strcmp(argv[i], "--phi") == 0)
            dst = &phi_path;
        else if (strcmp(argv[i], "--task") == 0)
            dst = &task_path;
        else if (strcmp(argv[i], "--out") == 0)
            dst = &out;
        if (!dst || i + 1 >= argc) {
            fprintf(stderr, "hdworker probe: %s '%s'\n",
                    dst ? "missing value for" : "unknown argument", argv[i]);
            return 2;
        }
        *dst = argv[++i];
    }
    if (!spec_path || !lam_path || !phi_path || !task_path || !out) {
        fprintf(stderr, "hdworker probe: needs --spec, --lambda, --phi, --task and --out\n");
        return 2;
    }
    run_spec sp;
    hd_err err = {0};
    if (spec_load(spec_path, &sp, &err) != HD_OK) {
        fprintf(stderr, "hdworker probe: invalid spec: %s\n", err.msg);
        return 2;
    }
    mlp_t *m = NULL;
    if (spec_model_new(&sp, 1, &m, &err) != HD_OK) {
        fprintf(stderr, "hdworker probe: %s\n", err.msg);
        return 2;
    }
    size_t nl = mlp_n_lam(m), nw = mlp_n_w(m), din = mlp_in_dim(m), dout = mlp_out_dim(m);
    mlp_free(m);
    double *lam = NULL, *phi = NULL;
    npz_file *z = NULL;
    int status = 2;
    if (load_exact(lam_path, nl, "--lambda", &lam) != 0) goto done;
    if (load_exact(phi_path, nw, "--phi", &phi) != 0) goto done;
    if (npz_load(task_path, 100000000, &z, &err) != HD_OK) {
        fprintf(stderr, "hdworker probe: --task: %s\n", err.msg);
        goto done;
    }
    task_t task;
    memset(&task, 0, sizeof task);
    const double *xs, *ys, *xq, *yq;
    size_t n1, n2, n3, n4;
    if (task_array(z, "xs", din, &xs, &n1) || task_array(z, "ys", dout, &ys, &n2) ||
        task_array(z, "xq", din, &xq, &n3) || task_array(z, "yq", dout, &yq, &n4))
        goto done;
    if (n1 != n2 || n3 != n4) {
        fprintf(stderr, "hdworker probe: --task: xs/ys and xq/yq must have matching rows\n");
        goto done;
    }
    task.n_s = n1;
    task.n_q = n3;
    task.in_dim = din;
    task.out_dim = dout;
    /* The probe only reads the arrays; the casts drop const for the struct's sake. */
    double *xsd = NULL, *ysd = NULL, *xqd = NULL, *yqd = NULL;
    size_t sizes[4] = {n1 * din, n2 * dout, n3 * din, n4 * dout};
    const double *src[4] = {xs, ys, xq, yq};
    double **dst[4] = {&xsd, &ysd, &xqd, &yqd};
    for (int i = 0; i < 4; i++) {
        *dst[i] = malloc(sizes[i] * sizeof(double));
        if (!*dst[i]) goto done_task;
        memcpy(*dst[i], src[i], sizes[i] * sizeof(double));
    }
    task.xs = xsd;
    task.ys = ysd;
    task.xq = xqd;
    task.yq = yqd;
    probe_result r;
    if (probe_run(&sp, lam, phi, &task, &r, &err) != HD_OK) {
        fprintf(stderr, "hdworker probe: %s\n", err.msg);
        status = 1;
        goto done_task;
    }
    status = write_outputs(out, &r) == 0 ? 0 : 1;
    if (status == 0)
        for (int k = 0; k < METHOD_COUNT; k++)
            printf("%-13s cosine to rmd %+.6f  norm %.6g  vjps %ld\n", method_name((method_kind)k),
                   r.cosine[k], vec_nrm2(nl, r.g[k]), r.vjps[k]);
    probe_result_clear(&r);
done_task:
    free(xsd);
    free(ysd);
    free(xqd);
    free(yqd);
done:
    npz_free(z);
    free(lam);
    free(phi);
    return status;
}
