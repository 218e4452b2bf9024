/* hdworker daemons against a real hdserver on 127.0.0.1 (issue: the online
 * loop over HTTP). Checks:
 *  - a sync sinusoid run finished by 1, 2 and 3 workers gives the final lam,
 *    phi and theta of `hdworker --local` with the same spec, to 1e-9 relative;
 *  - a worker SIGKILLed mid-episode: its leases expire, another worker
 *    finishes its slots, same final lam;
 *  - the server SIGKILLed and restarted (same port, same database) while two
 *    workers run: they wait, reconnect and finish, same final lam;
 *  - an async run with 3 workers completes (its meta-test loss is printed
 *    next to the sync run's);
 *  - bad settings (--shard 3/2, unreachable URL, wrong token, unknown run)
 *    end with a message and a non-zero exit status. */
#include <curl/curl.h>
#include <math.h>
#include <signal.h>

#include "check.h"
#include "hdclient.h"
#include "npy.h"

#define SPEC_FMT                                                                                   \
    "{\"task\": {\"family\": \"sinusoid\", \"shots\": 10, \"queries\": 10},"                       \
    " \"model\": {\"layers\": [1, 40, 40, 1], \"activation\": \"relu\", \"hyper_layers\": 2},"     \
    " \"inner\": {\"steps\": 10, \"lr\": 0.01, \"momentum\": 0.9},"                                \
    " \"outer\": {\"optimizer\": \"adam\", \"lr\": 0.001},"                                        \
    " \"method\": {\"name\": \"hyperdistill\", \"gamma\": 0.9, \"estimation_period\": 50},"        \
    " \"episodes\": %d, \"meta_batch\": 4, \"reptile_lr\": 1.0, \"seed\": 7,"                      \
    " \"eval\": {\"meta_val_tasks\": 10, \"meta_test_tasks\": 20, \"interval\": 2},"               \
    " \"mode\": \"%s\", \"lease_seconds\": %d, \"max_staleness\": 8}"

typedef struct {
    double *lam, *phi;
    size_t nl, nw;
    double theta, test;
} result_t;

static void result_clear(result_t *r) {
    free(r->lam);
    free(r->phi);
    memset(r, 0, sizeof *r);
}

static pid_t spawn(char *const argv[], const char *log) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Wait for pid up to timeout seconds; returns the exit status or -1. */
static int wait_exit(pid_t pid, double timeout) {
    double t0 = hdc_now();
    int st;
    while (hdc_now() - t0 < timeout) {
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
        hdc_sleep(0.02);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

static pid_t start_worker_shard(const hdc_server *s, const char *token, long run, const char *name,
                                const char *dir, int slots, const char *shard) {
    char bin[512], runs[32], sl[16], log[512], base[64], tok[128], nm[64], sh[16];
    snprintf(sh, sizeof sh, "%s", shard);
    snprintf(base, sizeof base, "%s", s->base);
    snprintf(tok, sizeof tok, "%s", token);
    snprintf(nm, sizeof nm, "%s", name);
    snprintf(bin, sizeof bin, "%s/hdworker", hdc_build_dir());
    snprintf(runs, sizeof runs, "%ld", run);
    snprintf(sl, sizeof sl, "%d", slots);
    snprintf(log, sizeof log, "%s/%s.log", dir, name);
    char *argv[] = {bin,
                    (char *)"--server",
                    base,
                    (char *)"--token",
                    tok,
                    (char *)"--run",
                    runs,
                    (char *)"--name",
                    nm,
                    (char *)"--slots",
                    sl,
                    (char *)"--no-progress",
                    (char *)"--poll-wait",
                    (char *)"2",
                    (char *)"--shard",
                    sh,
                    NULL};
    return spawn(argv, log);
}

static pid_t start_worker(const hdc_server *s, const char *token, long run, const char *name,
                          const char *dir, int slots) {
    return start_worker_shard(s, token, run, name, dir, slots, "0/1");
}

static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static double json_num(const char *json, const char *key) {
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = json ? strstr(json, pat) : NULL;
    if (!p) return (double)NAN;
    p += strlen(pat);
    while (*p == ' ') p++;
    char *end;
    double v = strtod(p, &end);
    return end == p ? (double)NAN : v;
}

/* The reference: hdworker --local. */
static int local_reference(const char *dir, const char *spec, result_t *r) {
    char specf[512], out[512], bin[512], log[512], path[600];
    snprintf(specf, sizeof specf, "%s/spec.json", dir);
    snprintf(out, sizeof out, "%s/local", dir);
    snprintf(bin, sizeof bin, "%s/hdworker", hdc_build_dir());
    snprintf(log, sizeof log, "%s/local.log", dir);
    if (write_file(specf, spec) != 0) return -1;
    char *argv[] = {bin, (char *)"--local", specf, (char *)"--out", out, (char *)"--quiet", NULL};
    if (wait_exit(spawn(argv, log), 120) != 0) return -1;
    hd_err err = {0};
    npy_header h;
    snprintf(path, sizeof path, "%s/lambda.npy", out);
    if (npy_load(path, 1u << 24, &h, &r->lam, &err) != HD_OK) return -1;
    r->nl = h.count;
    snprintf(path, sizeof path, "%s/phi.npy", out);
    if (npy_load(path, 1u << 24, &h, &r->phi, &err) != HD_OK) return -1;
    r->nw = h.count;
    snprintf(path, sizeof path, "%s/summary.json", out);
    char *sum = read_file(path);
    r->theta = json_num(sum, "theta");
    r->test = json_num(sum, "meta_test_loss");
    free(sum);
    return 0;
}

static long create_run(hdc_conn *c, const hdc_server *s, const char *spec, char *token,
                       size_t cap) {
    char url[128];
    snprintf(url, sizeof url, "%s/v1/runs", s->base);
    hdc_resp r;
    long st = hdc_req(c, "POST", url, HDC_ADMIN, spec, strlen(spec),
                      "Content-Type: application/json", &r);
    long id = st == 201 ? (long)hdc_json_int(r.body, "id", -1) : -1;
    hdc_json_str(r.body, "worker_token", token, cap);
    if (st != 201) fprintf(stderr, "create run: HTTP %ld %s\n", st, r.body);
    hdc_resp_free(&r);
    return id;
}

/* Final state of a run from the server. */
static int fetch_result(hdc_conn *c, const hdc_server *s, long id, result_t *out) {
    char url[160];
    hdc_resp r;
    hd_err err = {0};
    npy_header h;
    memset(out, 0, sizeof *out);
    snprintf(url, sizeof url, "%s/v1/runs/%ld/hyper", s->base, id);
    if (hdc_req(c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r) != 200 ||
        npy_decode((const uint8_t *)r.body, r.len, 1u << 24, 1, &h, &out->lam, &err) != HD_OK) {
        hdc_resp_free(&r);
        return -1;
    }
    out->nl = h.count;
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs/%ld/init", s->base, id);
    if (hdc_req(c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r) != 200 ||
        npy_decode((const uint8_t *)r.body, r.len, 1u << 24, 1, &h, &out->phi, &err) != HD_OK) {
        hdc_resp_free(&r);
        return -1;
    }
    out->nw = h.count;
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs/%ld", s->base, id);
    hdc_req(c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    char state[32];
    hdc_json_str(r.body, "state", state, sizeof state);
    out->theta = json_num(r.body, "theta");
    out->test = json_num(r.body, "meta_test_loss");
    int ok = strcmp(state, "completed") == 0;
    if (!ok) fprintf(stderr, "run %ld state '%s'\n", id, state);
    hdc_resp_free(&r);
    return ok ? 0 : -1;
}

static double rel(const double *a, const double *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs(a[i] - b[i]));
        m = fmax(m, fabs(b[i]));
    }
    return d / fmax(m, 1e-300);
}

static void compare(const char *what, const result_t *got, const result_t *ref) {
    CHECK_MSG(got->nl == ref->nl && got->nw == ref->nw, "%s: sizes differ", what);
    if (got->nl != ref->nl || got->nw != ref->nw) return;
    double rl = rel(got->lam, ref->lam, ref->nl), rp = rel(got->phi, ref->phi, ref->nw);
    double rt = fabs(got->theta - ref->theta) / fabs(ref->theta);
    printf("  %-34s lam rel %.2e  phi rel %.2e  theta rel %.2e\n", what, rl, rp, rt);
    CHECK_MSG(rl <= 1e-9, "%s: lam differs from the local run (rel %.3g)", what, rl);
    CHECK_MSG(rp <= 1e-9, "%s: phi differs from the local run (rel %.3g)", what, rp);
    CHECK_MSG(rt <= 1e-9, "%s: theta differs from the local run (rel %.3g)", what, rt);
}

/* Poll the run until outer_steps >= n (or timeout). */
static int wait_progress(hdc_conn *c, const hdc_server *s, long id, long n, double timeout) {
    char url[128];
    snprintf(url, sizeof url, "%s/v1/runs/%ld", s->base, id);
    double t0 = hdc_now();
    while (hdc_now() - t0 < timeout) {
        hdc_resp r;
        if (hdc_req(c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r) == 200 &&
            hdc_json_int(r.body, "outer_steps", 0) >= n) {
            hdc_resp_free(&r);
            return 0;
        }
        hdc_resp_free(&r);
        hdc_sleep(0.05);
    }
    return -1;
}

static void sync_with_workers(hdc_conn *c, const char *spec, const result_t *ref, int nworkers) {
    hdc_server s;
    char tag[32], token[128], name[32];
    snprintf(tag, sizeof tag, "dist%d", nworkers);
    if (hdc_tmpdir(&s, tag) != 0 || hdc_start(&s) != 0) {
        CHECK_MSG(0, "server start failed");
        return;
    }
    long id = create_run(c, &s, spec, token, sizeof token);
    CHECK(id > 0);
    pid_t pids[8];
    for (int i = 0; i < nworkers; i++) {
        snprintf(name, sizeof name, "w%d", i);
        pids[i] = start_worker(&s, token, id, name, s.dir, 1);
    }
    for (int i = 0; i < nworkers; i++) {
        int st = wait_exit(pids[i], 180);
        CHECK_MSG(st == 0, "%d workers: worker %d exit status %d (logs in %s)", nworkers, i, st,
                  s.dir);
    }
    result_t got;
    char what[64];
    snprintf(what, sizeof what, "sync, %d worker%s", nworkers, nworkers > 1 ? "s" : "");
    if (fetch_result(c, &s, id, &got) == 0)
        compare(what, &got, ref);
    else
        CHECK_MSG(0, "%s: run did not complete (logs in %s)", what, s.dir);
    result_clear(&got);
    hdc_cleanup(&s);
}

/* Two shards: each worker must only ever be given slots b with b % 2 == I. */
static void sharded(hdc_conn *c, const char *spec, const result_t *ref) {
    hdc_server s;
    char token[128];
    if (hdc_tmpdir(&s, "shard") != 0 || hdc_start(&s) != 0) {
        CHECK_MSG(0, "server start failed");
        return;
    }
    long id = create_run(c, &s, spec, token, sizeof token);
    pid_t w0 = start_worker_shard(&s, token, id, "s0", s.dir, 1, "0/2");
    pid_t w1 = start_worker_shard(&s, token, id, "s1", s.dir, 1, "1/2");
    int st0 = wait_exit(w0, 180), st1 = wait_exit(w1, 180);
    CHECK_MSG(st0 == 0 && st1 == 0, "shards: exit status %d %d (logs in %s)", st0, st1, s.dir);
    for (int i = 0; i < 2; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/s%d.log", s.dir, i);
        char *log = read_file(path);
        int joined = 0, wrong = 0;
        for (const char *p = log; p && (p = strstr(p, "slots=")) != NULL; p += 6) {
            const char *line = p;
            while (line > log && line[-1] != '\n') line--;
            if (!strstr(line, "lease joined") || strstr(line, "lease joined") > p) continue;
            joined++;
            for (const char *q = p + 6; *q && *q != ' ' && *q != '\n'; q++)
                if (*q >= '0' && *q <= '9' && (q[1] < '0' || q[1] > '9') && (*q - '0') % 2 != i)
                    wrong++;
        }
        CHECK_MSG(joined > 0 && wrong == 0, "shard %d/2: %d leases, %d slots of the other shard", i,
                  joined, wrong);
        free(log);
    }
    result_t got;
    if (fetch_result(c, &s, id, &got) == 0)
        compare("two shards, one worker each", &got, ref);
    else
        CHECK_MSG(0, "shards: run did not complete (logs in %s)", s.dir);
    result_clear(&got);
    hdc_cleanup(&s);
}

static void worker_killed(hdc_conn *c, const char *spec, const result_t *ref) {
    hdc_server s;
    char token[128];
    if (hdc_tmpdir(&s, "wkill") != 0 || hdc_start(&s) != 0) {
        CHECK_MSG(0, "server start failed");
        return;
    }
    long id = create_run(c, &s, spec, token, sizeof token);
    pid_t a = start_worker(&s, token, id, "victim", s.dir, 2);
    /* Mid-episode of episode 2 (10 outer steps per episode). */
    CHECK_MSG(wait_progress(c, &s, id, 14, 60) == 0, "worker kill: no progress");
    kill(a, SIGKILL);
    waitpid(a, NULL, 0);
    pid_t b = start_worker(&s, token, id, "rescuer", s.dir, 1);
    int st = wait_exit(b, 180);
    CHECK_MSG(st == 0, "worker kill: rescuer exit status %d (logs in %s)", st, s.dir);
    result_t got;
    if (fetch_result(c, &s, id, &got) == 0)
        compare("worker SIGKILLed mid-episode", &got, ref);
    else
        CHECK_MSG(0, "worker kill: run did not complete (logs in %s)", s.dir);
    result_clear(&got);
    hdc_cleanup(&s);
}

/* SIGTERM: the worker finishes its step, releases its leases and exits 0;
 * a second worker then finishes the run. SIGINT twice exits at once. */
static void worker_signals(hdc_conn *c, const char *spec, const result_t *ref) {
    hdc_server s;
    char token[128], url[160];
    if (hdc_tmpdir(&s, "wsig") != 0 || hdc_start(&s) != 0) {
        CHECK_MSG(0, "server start failed");
        return;
    }
    long id = create_run(c, &s, spec, token, sizeof token);
    pid_t a = start_worker(&s, token, id, "termed", s.dir, 4);
    CHECK_MSG(wait_progress(c, &s, id, 14, 60) == 0, "worker signals: no progress");
    double t0 = hdc_now();
    kill(a, SIGTERM);
    int st = wait_exit(a, 30);
    printf("  SIGTERM: worker exit status %d after %.2f s\n", st, hdc_now() - t0);
    CHECK_MSG(st == 0, "SIGTERM: worker exit status %d, want 0", st);
    /* Its leases were released, not left to expire (lease_seconds is 30). */
    snprintf(url, sizeof url, "%s/v1/runs/%ld", s.base, id);
    hdc_resp r;
    hdc_req(c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    const char *leases = r.body ? strstr(r.body, "\"leases\":[") : NULL;
    CHECK_MSG(leases && strncmp(leases, "\"leases\":[]", 11) == 0,
              "SIGTERM: leases still held after the worker exited");
    hdc_resp_free(&r);
    pid_t b = start_worker(&s, token, id, "finisher", s.dir, 4);
    pid_t i2 = start_worker(&s, token, id, "interrupted", s.dir, 1);
    hdc_sleep(0.5);
    t0 = hdc_now();
    kill(i2, SIGINT);
    hdc_sleep(0.05);
    kill(i2, SIGINT);
    int st2 = wait_exit(i2, 10);
    CHECK_MSG(st2 != -1 && hdc_now() - t0 < 5.0, "SIGINT twice: no prompt exit (status %d)", st2);
    st = wait_exit(b, 180);
    CHECK_MSG(st == 0, "worker signals: finisher exit status %d (logs in %s)", st, s.dir);
    result_t got;
    if (fetch_result(c, &s, id, &got) == 0)
        compare("after SIGTERM of a worker", &got, ref);
    else
        CHECK_MSG(0, "worker signals: run did not complete (logs in %s)", s.dir);
    result_clear(&got);
    hdc_cleanup(&s);
}

static void server_killed(hdc_conn *c, const char *spec, const result_t *ref) {
    hdc_server s;
    char token[128];
    if (hdc_tmpdir(&s, "skill") != 0 || hdc_start(&s) != 0) {
        CHECK_MSG(0, "server start failed");
        return;
    }
    long id = create_run(c, &s, spec, token, sizeof token);
    pid_t w[2] = {start_worker(&s, token, id, "w0", s.dir, 1),
                  start_worker(&s, token, id, "w1", s.dir, 1)};
    CHECK_MSG(wait_progress(c, &s, id, 15, 60) == 0, "server kill: no progress");
    hdc_stop(&s, SIGKILL);
    hdc_sleep(1.5); /* the workers retry meanwhile */
    /* Restart on the same database and the same port. */
    snprintf(s.extra[s.nextra++], sizeof s.extra[0], "--listen");
    snprintf(s.extra[s.nextra++], sizeof s.extra[0], "127.0.0.1:%u", s.port);
    CHECK_MSG(hdc_start(&s) == 0, "server restart on the same port failed");
    for (int i = 0; i < 2; i++) {
        int st = wait_exit(w[i], 180);
        CHECK_MSG(st == 0, "server kill: worker %d exit status %d (logs in %s)", i, st, s.dir);
    }
    result_t got;
    if (fetch_result(c, &s, id, &got) == 0)
        compare("server SIGKILLed and restarted", &got, ref);
    else
        CHECK_MSG(0, "server kill: run did not complete (logs in %s)", s.dir);
    result_clear(&got);
    hdc_cleanup(&s);
}

static void async_run(hdc_conn *c, const char *spec, double sync_test) {
    hdc_server s;
    char token[128], name[16];
    if (hdc_tmpdir(&s, "async") != 0 || hdc_start(&s) != 0) {
        CHECK_MSG(0, "server start failed");
        return;
    }
    long id = create_run(c, &s, spec, token, sizeof token);
    pid_t w[3];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "a%d", i);
        w[i] = start_worker(&s, token, id, name, s.dir, 1);
    }
    for (int i = 0; i < 3; i++) {
        int st = wait_exit(w[i], 180);
        CHECK_MSG(st == 0, "async: worker %d exit status %d (logs in %s)", i, st, s.dir);
    }
    result_t got;
    int ok = fetch_result(c, &s, id, &got) == 0;
    CHECK_MSG(ok, "async run did not complete (logs in %s)", s.dir);
    if (ok) {
        printf("  meta-test loss: sync %.6f   async (3 workers) %.6f\n", sync_test, got.test);
        CHECK(isfinite(got.test));
    }
    result_clear(&got);
    hdc_cleanup(&s);
}

/* Run hdworker with args; expect a non-zero exit and a message. */
static void bad_setting(const char *what, char *const argv[], const char *dir) {
    char log[512];
    snprintf(log, sizeof log, "%s/bad.log", dir);
    unlink(log);
    int st = wait_exit(spawn(argv, log), 60);
    char *msg = read_file(log);
    int has_msg = msg && strstr(msg, "hdworker:") != NULL;
    printf("  bad setting %-22s exit %d: ", what, st);
    if (msg) {
        const char *line = strstr(msg, "hdworker:");
        if (line) printf("%.*s", (int)(strcspn(line, "\n")), line);
    }
    printf("\n");
    CHECK_MSG(st != 0 && st != -1, "%s: exit status %d, want non-zero", what, st);
    CHECK_MSG(has_msg, "%s: no message", what);
    free(msg);
}

static void bad_settings(hdc_conn *c, const char *spec) {
    hdc_server s;
    char token[128];
    if (hdc_tmpdir(&s, "bad") != 0 || hdc_start(&s) != 0) {
        CHECK_MSG(0, "server start failed");
        return;
    }
    long id = create_run(c, &s, spec, token, sizeof token);
    char bin[512], runs[32];
    snprintf(bin, sizeof bin, "%s/hdworker", hdc_build_dir());
    snprintf(runs, sizeof runs, "%ld", id);
    char *a1[] = {bin,           (char *)"--server",
                  s.base,        (char *)"--token",
                  token,         (char *)"--run",
                  runs,          (char *)"--shard",
                  (char *)"3/2", NULL};
    bad_setting("--shard 3/2", a1, s.dir);
    char *a2[] = {bin,
                  (char *)"--server",
                  (char *)"http://127.0.0.1:1",
                  (char *)"--token",
                  token,
                  (char *)"--run",
                  runs,
                  (char *)"--retry-deadline",
                  (char *)"1",
                  NULL};
    bad_setting("unreachable URL", a2, s.dir);
    char *a3[] = {bin,
                  (char *)"--server",
                  s.base,
                  (char *)"--token",
                  (char *)"not-the-token",
                  (char *)"--run",
                  runs,
                  NULL};
    bad_setting("wrong token", a3, s.dir);
    char *a4[] = {bin,   (char *)"--server", s.base,        (char *)"--token",
                  token, (char *)"--run",    (char *)"999", NULL};
    bad_setting("unknown run", a4, s.dir);
    char *a5[] = {bin, (char *)"--server", (char *)"ftp://x", (char *)"--token", token, NULL};
    bad_setting("not an http URL", a5, s.dir);
    hdc_cleanup(&s);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    hdc_conn c;
    hdc_conn_init(&c);
    char spec[2048], spec_async[2048], dir[] = "/tmp/hdtest-distref-XXXXXX";
    snprintf(spec, sizeof spec, SPEC_FMT, 4, "sync", 30);
    snprintf(spec_async, sizeof spec_async, SPEC_FMT, 4, "async", 30);
    result_t ref;
    memset(&ref, 0, sizeof ref);
    if (!mkdtemp(dir) || local_reference(dir, spec, &ref) != 0) {
        CHECK_MSG(0, "local reference run failed (%s)", dir);
        return check_finish("test_distributed");
    }
    printf("local reference: n_lam %zu, n_w %zu, theta %.6f, meta-test %.6f\n", ref.nl, ref.nw,
           ref.theta, ref.test);
    for (int n = 1; n <= 3; n++) sync_with_workers(&c, spec, &ref, n);
    char spec_sh[2048];
    snprintf(spec_sh, sizeof spec_sh, "%.*s, \"shards\": 2}", (int)strlen(spec) - 1, spec);
    sharded(&c, spec_sh, &ref);
    /* Fault runs: short leases so that a dead worker's slots come back quickly. */
    char spec_fault[2048];
    snprintf(spec_fault, sizeof spec_fault, SPEC_FMT, 4, "sync", 2);
    worker_killed(&c, spec_fault, &ref);
    worker_signals(&c, spec, &ref);
    server_killed(&c, spec_fault, &ref);
    async_run(&c, spec_async, ref.test);
    bad_settings(&c, spec);
    result_clear(&ref);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (!getenv("HD_TEST_KEEP") && system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    hdc_conn_clear(&c);
    curl_global_cleanup();
    return check_finish("test_distributed");
}
