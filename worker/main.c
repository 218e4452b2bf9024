/* hdworker: the worker program. Modes:
 *   hdworker --local SPEC.json --out DIR [--lambda L.npy] [--phi P.npy]
 *       a whole run in this process (the reference a distributed run reproduces)
 *   hdworker probe --spec SPEC.json --lambda L.npy --phi P.npy --task T.npz --out DIR
 *       every method's hypergradient for one episode of one task
 *   hdworker --server URL --token TOKEN ...   (the daemon, see daemon.h)
 * A bad spec or argument is refused with a message and exit status 2, before
 * anything is written. */
#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "npy.h"
#include "probe.h"
#include "runner.h"
#include "spec.h"
#include "vec.h"

#include <curl/curl.h>

#include "config.h"
#include "daemon.h"

static void usage(FILE *f) { wconfig_usage(f); }

/* Load a warm-start vector and check its length against the model. */
static int load_vec(const char *path, size_t n, const char *what, double **out) {
    hd_err err = {0};
    npy_header h;
    double *data = NULL;
    if (npy_load(path, n + 1, &h, &data, &err) != HD_OK) {
        fprintf(stderr, "hdworker: %s: %s\n", what, err.msg);
        return -1;
    }
    if (h.count != n) {
        fprintf(stderr, "hdworker: %s: %s holds %zu numbers, the model needs %zu\n", what, path,
                h.count, n);
        free(data);
        return -1;
    }
    if (!vec_all_finite(n, data)) {
        fprintf(stderr, "hdworker: %s: %s holds NaN or Inf\n", what, path);
        free(data);
        return -1;
    }
    *out = data;
    return 0;
}

static int model_sizes(const run_spec *sp, size_t *nl, size_t *nw) {
    mlp_t *m = NULL;
    hd_err err = {0};
    if (spec_model_new(sp, 1, &m, &err) != HD_OK) {
        fprintf(stderr, "hdworker: %s\n", err.msg);
        return -1;
    }
    *nl = mlp_n_lam(m);
    *nw = mlp_n_w(m);
    mlp_free(m);
    return 0;
}

static int run_local(int argc, char **argv) {
    const char *spec_path = NULL, *out = NULL, *lam_path = NULL, *phi_path = NULL;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (strcmp(a, "--local") == 0)
            dst = &spec_path;
        else if (strcmp(a, "--out") == 0)
            dst = &out;
        else if (strcmp(a, "--lambda") == 0)
            dst = &lam_path;
        else if (strcmp(a, "--phi") == 0)
            dst = &phi_path;
        else if (strcmp(a, "--quiet") == 0) {
            quiet = 1;
            continue;
        } else {
            fprintf(stderr, "hdworker: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "hdworker: %s needs a value\n", a);
            return 2;
        }
        *dst = argv[++i];
    }
    if (!spec_path || !out) {
        fprintf(stderr, "hdworker: --local needs a spec file and --out DIR\n");
        usage(stderr);
        return 2;
    }
    run_spec sp;
    hd_err err = {0};
    if (spec_load(spec_path, &sp, &err) != HD_OK) {
        fprintf(stderr, "hdworker: invalid spec: %s\n", err.msg);
        return 2;
    }
    size_t nl, nw;
    if (model_sizes(&sp, &nl, &nw) != 0) return 2;
    double *lam0 = NULL, *phi0 = NULL;
    if (lam_path && load_vec(lam_path, nl, "--lambda", &lam0) != 0) return 2;
    if (phi_path && load_vec(phi_path, nw, "--phi", &phi0) != 0) {
        free(lam0);
        return 2;
    }
    runner_opts opts = {.out_dir = out,
                        .lam_init = lam0,
                        .phi_init = phi0,
                        .progress = quiet ? 0 : (isatty(2) ? 1 : 2),
                        .refit_theta = sp.method.kind == METHOD_HYPERDISTILL};
    runner_result res;
    HD_LOG_INFO("local run method=%s episodes=%d meta_batch=%d steps=%d n_lam=%zu n_w=%zu out=%s",
                method_name(sp.method.kind), sp.episodes, sp.meta_batch, sp.steps, nl, nw, out);
    hd_rc rc = runner_local(&sp, &opts, &res, &err);
    free(lam0);
    free(phi0);
    if (rc != HD_OK) {
        fprintf(stderr, "hdworker: %s\n", err.msg);
        return 1;
    }
    int status = res.failed ? 3 : 0;
    if (res.failed)
        HD_LOG_ERROR("run failed reason=\"%s\"", res.reason);
    else
        HD_LOG_INFO("run completed meta_val_loss=%.6g meta_test_loss=%.6g theta=%.6g "
                    "vjps_per_episode=%.1f seconds_per_episode=%.4f",
                    res.meta_val_loss, res.meta_test_loss, res.theta, res.vjps_per_episode,
                    res.seconds_per_episode);
    runner_result_clear(&res);
    return status;
}

int main(int argc, char **argv) {
    openblas_set_num_threads(1);
    hd_log_init("hdworker", HD_LOG_LVL_INFO);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "probe") == 0) return probe_main(argc - 1, argv + 1);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--local") == 0) return run_local(argc, argv);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "hdworker: curl_global_init failed\n");
        return 1;
    }
    int status = daemon_main(argc, argv);
    curl_global_cleanup();
    return status;
}
