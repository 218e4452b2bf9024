/* The single-process run: ALGORITHM.md section 7 (sync), with HyperDistill's
 * LinearEstimation rounds (section 4) and Reptile (section 6). Summation
 * orders are the ones the server uses: per-slot quantities are added in slot
 * order, so a distributed run reproduces this one. */
#include "runner.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "npy.h"
#include "vec.h"

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double runner_eval(const run_spec *spec, episode_t *e, task_t *t, const double *lam,
                   const double *phi, task_stream stream, int first, int count, int *blowups,
                   double *sum) {
    int K = episode_slots(e);
    const double *xs[64], *ys[64], *xq[64], *yq[64];
    double loss[64];
    double s = 0.0;
    if (K > 64) K = 64;
    for (int i = first; i < first + count; i += K) {
        int n = first + count - i < K ? first + count - i : K;
        for (int j = 0; j < n; j++) {
            task_make(&spec->task, spec->seed, stream, 0, (uint64_t)(i + j), &t[j]);
            xs[j] = t[j].xs;
            ys[j] = t[j].ys;
            xq[j] = t[j].xq;
            yq[j] = t[j].yq;
        }
        episode_eval_batch(e, lam, phi, n, xs, ys, xq, yq, loss);
        /* Losses are added in task order, whatever the batch size. */
        for (int j = 0; j < n; j++) {
            if (blowups && (!isfinite(loss[j]) || loss[j] > spec->blowup_loss)) (*blowups)++;
            s += loss[j];
        }
    }
    if (sum) *sum = s;
    return count > 0 ? s / count : (double)NAN;
}

void runner_result_clear(runner_result *res) {
    free(res->lam);
    free(res->phi);
    memset(res, 0, sizeof *res);
}

/* Output files, opened only when the run is valid. */
typedef struct {
    FILE *metrics;
    FILE *samples;
} outputs;

static hd_rc outputs_open(const char *dir, outputs *o, hd_err *err) {
    memset(o, 0, sizeof *o);
    if (!dir) return HD_OK;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return hd_err_set(err, HD_EIO, "cannot create %s: %s", dir, strerror(errno));
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    o->metrics = fopen(path, "w");
    snprintf(path, sizeof path, "%s/samples.jsonl", dir);
    o->samples = fopen(path, "w");
    if (!o->metrics || !o->samples) {
        if (o->metrics) fclose(o->metrics);
        if (o->samples) fclose(o->samples);
        return hd_err_set(err, HD_EIO, "cannot write in %s: %s", dir, strerror(errno));
    }
    return HD_OK;
}

static void json_num(FILE *f, const char *key, double v, int comma) {
    if (isfinite(v))
        fprintf(f, "\"%s\": %.17g", key, v);
    else
        fprintf(f, "\"%s\": null", key);
    if (comma) fputs(", ", f);
}

static void write_samples(FILE *f, int m, double theta, int B, int T, const double *x,
                          const double *y) {
    if (!f) return;
    fprintf(f, "{\"episode\": %d, ", m);
    json_num(f, "theta", theta, 1);
    fputs("\"slots\": [", f);
    for (int b = 0; b < B; b++) {
        fprintf(f, "%s{\"slot\": %d, \"x\": [", b ? ", " : "", b);
        for (int s = 0; s < T; s++) fprintf(f, "%s%.17g", s ? ", " : "", x[(size_t)b * T + s]);
        fputs("], \"y\": [", f);
        for (int s = 0; s < T; s++) fprintf(f, "%s%.17g", s ? ", " : "", y[(size_t)b * T + s]);
        fputs("]}", f);
    }
    fputs("]}\n", f);
    fflush(f);
}

/* LinearEstimation round over the B slots of episode m with lam fixed:
 * per-slot sums merged in slot order. Returns 0 and sets *theta when a fit
 * was possible. */
static int estimate_round(const run_spec *sp, episode_t *ep, task_t *tasks, const double *lam,
                          const double *phi, uint64_t m, double *x, double *y, linest_sums *sums,
                          long *vjps, double *theta) {
    int B = sp->meta_batch;
    for (int b = 0; b < B; b++) {
        task_make(&sp->task, sp->seed, TASK_STREAM_TRAIN, m, (uint64_t)b, &tasks[b]);
        episode_begin_slot(ep, b, phi, tasks[b].xs, tasks[b].ys, tasks[b].xq, tasks[b].yq);
        linest_init(&sums[b]);
    }
    long v = 0;
    episode_estimate_batch(ep, lam, sp->method.gamma, x, y, sums, &v, NULL);
    *vjps += v;
    /* Per-slot sums pooled in slot order (a slot that blew up has none). */
    linest_sums pooled;
    linest_init(&pooled);
    for (int b = 0; b < B; b++) linest_merge(&pooled, &sums[b]);
    return linest_fit(&pooled, theta);
}

static hd_rc write_summary(const char *dir, const run_spec *sp, const runner_result *r,
                           hd_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return hd_err_set(err, HD_EIO, "cannot write %s: %s", path, strerror(errno));
    fprintf(f, "{\"state\": \"%s\", ", r->failed ? "failed" : "completed");
    if (r->failed) fprintf(f, "\"reason\": \"%s\", ", r->reason);
    fprintf(f, "\"method\": \"%s\", \"episodes\": %d, \"meta_batch\": %d, \"steps\": %d, ",
            method_name(sp->method.kind), r->episodes_done, sp->meta_batch, sp->steps);
    json_num(f, "train_loss", r->train_loss, 1);
    json_num(f, "meta_val_loss", r->meta_val_loss, 1);
    json_num(f, "meta_test_loss", r->meta_test_loss, 1);
    json_num(f, "theta", r->theta, 1);
    json_num(f, "theta_refit", r->theta_refit, 1);
    fprintf(f, "\"vjps_total\": %ld, ", r->vjps_total);
    json_num(f, "vjps_per_episode", r->vjps_per_episode, 1);
    json_num(f, "seconds_train", r->seconds_train, 1);
    json_num(f, "seconds_per_episode", r->seconds_per_episode, 1);
    fprintf(f, "\"blowups\": %d, \"skipped_steps\": %d}\n", r->blowups, r->skipped_steps);
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad) return hd_err_set(err, HD_EIO, "write %s failed", path);
    return HD_OK;
}

hd_rc runner_local(const run_spec *sp, const runner_opts *opts, runner_result *res, hd_err *err) {
    hd_rc rc = HD_OK;
    int B = sp->meta_batch, T = sp->steps, M = sp->episodes;
    size_t rows = (size_t)B * (sp->task.shots + sp->task.queries); /* all slots stacked */
    mlp_t *m = NULL;
    episode_t *ep1 = NULL; /* all B slots in one batched episode */
    linest_sums *sums = NULL;
    episode_info *info = NULL;
    task_t *tasks = NULL;
    double *lam = NULL, *phi = NULL, *gsum = NULL, *wsum = NULL, *sx = NULL, *sy = NULL;
    outer_state ost;
    memset(&ost, 0, sizeof ost);
    outputs out;
    memset(&out, 0, sizeof out);
    memset(res, 0, sizeof *res);
    res->meta_val_loss = res->meta_test_loss = res->theta_refit = (double)NAN;

    if ((rc = spec_model_new(sp, rows, &m, err)) != HD_OK) goto done;
    size_t nl = mlp_n_lam(m), nw = mlp_n_w(m);
    lam = calloc(nl ? nl : 1, sizeof *lam);
    phi = calloc(nw, sizeof *phi);
    gsum = calloc(nl ? nl : 1, sizeof *gsum);
    wsum = calloc(nw, sizeof *wsum);
    sx = calloc((size_t)B * T, sizeof *sx);
    sy = calloc((size_t)B * T, sizeof *sy);
    sums = calloc((size_t)B, sizeof *sums);
    info = calloc((size_t)B, sizeof *info);
    tasks = calloc((size_t)B, sizeof *tasks);
    if (!lam || !phi || !gsum || !wsum || !sx || !sy || !sums || !info || !tasks) {
        rc = hd_err_set(err, HD_ENOMEM, "runner: out of memory");
        goto done;
    }
    if ((rc = episode_new_batch(m, &sp->inner, &sp->method, T, sp->task.shots, sp->task.queries, B,
                                &ep1, err)) != HD_OK)
        goto done;
    episode_set_guard(ep1, sp->skip_nonfinite, sp->guard_loss);
    for (int b = 0; b < B; b++)
        if ((rc = task_alloc(&tasks[b], sp->task.shots, sp->task.queries, sp->task.in_dim,
                             sp->task.out_dim, err)) != HD_OK)
            goto done;
    if ((rc = outer_state_init(&ost, &sp->outer, nl, err)) != HD_OK) goto done;
    mlp_init_params(m, sp->seed, lam, phi);
    if (opts->lam_init) vec_copy(nl, lam, opts->lam_init);
    if (opts->phi_init) vec_copy(nw, phi, opts->phi_init);
    if ((rc = outputs_open(opts->out_dir, &out, err)) != HD_OK) goto done;

    double theta = sp->method.theta_init;
    double t_train = 0.0;
    long vjps = 0;
    for (int ep = 1; ep <= M; ep++) {
        double t0 = now_sec();
        long vjps0 = vjps;
        if (method_is_estimation_episode(&sp->method, ep)) {
            double th;
            if (estimate_round(sp, ep1, tasks, lam, phi, (uint64_t)ep, sx, sy, sums, &vjps, &th) ==
                0)
                theta = th;
            write_samples(out.samples, ep, theta, B, T, sx, sy);
        }
        for (int b = 0; b < B; b++) {
            task_make(&sp->task, sp->seed, TASK_STREAM_TRAIN, (uint64_t)ep, (uint64_t)b, &tasks[b]);
            episode_begin_slot(ep1, b, phi, tasks[b].xs, tasks[b].ys, tasks[b].xq, tasks[b].yq);
        }
        double gnorm_sum = 0.0, train_loss = 0.0;
        int nposts = 0, blow = 0;
        for (int t = 1; t <= T; t++) {
            /* gsum = the sum of the B slots' hypergradients, in one batched step. */
            episode_step_batch(ep1, lam, theta, 0, gsum, info);
            int posted = info[0].posted;
            for (int b = 0; b < B; b++) {
                vjps += info[b].vjps;
                if (info[b].nonfinite && (sp->skip_nonfinite || sp->guard_loss > 0.0))
                    res->skipped_steps++;
                if (t == T) {
                    double vl = info[b].val_loss;
                    train_loss += vl;
                    if (!isfinite(vl) || vl > sp->blowup_loss) blow = 1, res->blowups++;
                }
            }
            if (!posted) continue;
            vec_scale(nl, gsum, 1.0 / B);
            if (!vec_all_finite(nl, gsum)) {
                res->failed = 1;
                snprintf(res->reason, sizeof res->reason,
                         "non-finite hypergradient at episode %d step %d", ep, t);
                break;
            }
            if (sp->clip_norm > 0.0) outer_clip(nl, gsum, sp->clip_norm);
            gnorm_sum += vec_nrm2(nl, gsum);
            nposts++;
            outer_apply(&sp->outer, &ost, lam, gsum);
        }
        if (res->failed) break;
        /* Reptile with the mean final weights, summed in slot order. */
        vec_copy(nw, wsum, episode_w_slot(ep1, 0));
        for (int b = 1; b < B; b++) vec_axpy(nw, wsum, 1.0, episode_w_slot(ep1, b));
        vec_scale(nw, wsum, 1.0 / B);
        if (sp->reptile_lr > 0.0) outer_reptile(nw, phi, sp->reptile_lr, wsum);
        double secs = now_sec() - t0;
        t_train += secs;
        train_loss /= B;
        res->train_loss = train_loss;
        res->episodes_done = ep;
        double val = (double)NAN;
        int last = ep == M;
        if (sp->meta_val_tasks > 0 &&
            ((sp->eval_interval > 0 && ep % sp->eval_interval == 0) || last))
            val = runner_eval(sp, ep1, tasks, lam, phi, TASK_STREAM_VAL, 0, sp->meta_val_tasks,
                              NULL, NULL);
        if (last) res->meta_val_loss = val;
        if (out.metrics) {
            fprintf(out.metrics, "{\"episode\": %d, ", ep);
            json_num(out.metrics, "train_loss", train_loss, 1);
            json_num(out.metrics, "val_loss", val, 1);
            json_num(out.metrics, "hypergrad_norm", nposts ? gnorm_sum / nposts : (double)NAN, 1);
            json_num(out.metrics, "theta", theta, 1);
            fprintf(out.metrics, "\"vjps\": %ld, \"episode_vjps\": %ld, \"blowup\": %s, ", vjps,
                    vjps - vjps0, blow ? "true" : "false");
            json_num(out.metrics, "seconds", secs, 0);
            fputs("}\n", out.metrics);
            fflush(out.metrics);
        }
        if (opts->progress == 1) {
            fprintf(stderr, "\r%-70s\r", "");
            fprintf(stderr, "episode %d/%d  train %.4f  val %s%.4f  theta %.4g  %.1fs", ep, M,
                    train_loss, isfinite(val) ? "" : "-", isfinite(val) ? val : 0.0, theta,
                    t_train);
            if (ep == M) fputc('\n', stderr);
        } else if (opts->progress == 2) {
            HD_LOG_INFO(
                "episode=%d/%d train_loss=%.6g val_loss=%.6g theta=%.6g vjps=%ld seconds=%.3f", ep,
                M, train_loss, val, theta, vjps, t_train);
        }
    }
    res->theta = theta;
    res->vjps_total = vjps;
    res->seconds_train = t_train;
    if (res->episodes_done > 0) {
        res->vjps_per_episode = (double)vjps / res->episodes_done / B;
        res->seconds_per_episode = t_train / res->episodes_done;
    }
    if (!res->failed && opts->refit_theta && sp->method.kind == METHOD_HYPERDISTILL) {
        long v = 0;
        double th;
        if (estimate_round(sp, ep1, tasks, lam, phi, (uint64_t)M + 1, sx, sy, sums, &v, &th) == 0)
            res->theta_refit = th;
    }
    if (!res->failed && !opts->skip_test && sp->meta_test_tasks > 0)
        res->meta_test_loss = runner_eval(sp, ep1, tasks, lam, phi, TASK_STREAM_TEST, 0,
                                          sp->meta_test_tasks, NULL, NULL);
    if (opts->out_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/lambda.npy", opts->out_dir);
        if ((rc = npy_save_vec(path, NPY_F64, nl, lam, err)) != HD_OK) goto done;
        snprintf(path, sizeof path, "%s/phi.npy", opts->out_dir);
        if ((rc = npy_save_vec(path, NPY_F64, nw, phi, err)) != HD_OK) goto done;
        if ((rc = write_summary(opts->out_dir, sp, res, err)) != HD_OK) goto done;
    }
    res->n_lam = nl;
    res->n_w = nw;
    res->lam = lam;
    res->phi = phi;
    lam = phi = NULL;
done:
    if (out.metrics) fclose(out.metrics);
    if (out.samples) fclose(out.samples);
    outer_state_clear(&ost);
    episode_free(ep1);
    free(sums);
    free(info);
    for (int b = 0; tasks && b < B; b++) task_clear(&tasks[b]);
    free(tasks);
    free(lam);
    free(phi);
    free(gsum);
    free(wsum);
    free(sx);
    free(sy);
    mlp_free(m);
    return rc;
}
