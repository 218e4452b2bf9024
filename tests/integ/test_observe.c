/* Observation endpoints against a real hdserver (issue 6): the plain-text
 * status (?format=text) with its sparkline and fields and its auth; the
 * Server-Sent Events stream of a run driven by a simulated worker (state
 * snapshot, step/theta/episode/eval/state events, the stream ends when the
 * run is finished, Last-Event-ID resumes, heartbeats, little CPU while
 * idle); GET /metrics through a strict format checker and promtool when
 * installed; the dashboard page; and SIGTERM with an open event stream
 * exits 0 within 5 s. */
#include <pthread.h>

#include "check.h"
#include "promcheck.h"
#include "simworker.h"

/* Sync HyperDistill with estimation rounds and meta-validation. */
static const char *spec_a =
    "{\"task\":{\"family\":\"sinusoid\",\"shots\":10,\"queries\":10},"
    "\"model\":{\"layers\":[1,16,16,1],\"hyper_layers\":2},"
    "\"inner\":{\"steps\":5,\"lr\":0.01,\"momentum\":0.9},"
    "\"method\":{\"name\":\"hyperdistill\",\"gamma\":0.9,\"estimation_period\":2},"
    "\"episodes\":5,\"meta_batch\":2,\"seed\":3,"
    "\"eval\":{\"meta_val_tasks\":4,\"meta_test_tasks\":6,\"interval\":1}}";

/* A long run that is only driven partly. */
static const char *spec_b = "{\"task\":{\"family\":\"sinusoid\",\"shots\":10,\"queries\":10},"
                            "\"model\":{\"layers\":[1,16,16,1],\"hyper_layers\":2},"
                            "\"inner\":{\"steps\":4},\"method\":{\"name\":\"onestep\"},"
                            "\"episodes\":500,\"meta_batch\":2,\"seed\":5,"
                            "\"eval\":{\"meta_val_tasks\":3,\"interval\":1}}";

/* ---- an SSE reader on its own thread ---------------------------------------- */

typedef struct {
    char url[512];
    char hdr[160];  /* extra header line or "" */
    double timeout; /* seconds */
    pthread_mutex_t mu;
    char *buf; /* received bytes (NUL-terminated) */
    size_t len;
    int done; /* 1 when the transfer ended */
    int curl_rc;
    long status;
    pthread_t th;
} sse_reader;

static size_t sse_write(char *p, size_t sz, size_t n, void *ud) {
    sse_reader *s = ud;
    size_t add = sz * n;
    pthread_mutex_lock(&s->mu);
    char *nb = realloc(s->buf, s->len + add + 1);
    if (nb) {
        memcpy(nb + s->len, p, add);
        s->buf = nb;
        s->len += add;
        s->buf[s->len] = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return nb ? add : 0;
}

static void *sse_main(void *arg) {
    sse_reader *s = arg;
    CURL *h = curl_easy_init();
    struct curl_slist *hl = NULL;
    if (s->hdr[0]) hl = curl_slist_append(hl, s->hdr);
    curl_easy_setopt(h, CURLOPT_URL, s->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sse_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(s->timeout * 1000));
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(h);
    long st = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    pthread_mutex_lock(&s->mu);
    s->curl_rc = (int)rc;
    s->status = st;
    s->done = 1;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int sse_start(sse_reader *s, const char *url, const char *hdr, double timeout) {
    memset(s, 0, sizeof *s);
    snprintf(s->url, sizeof s->url, "%s", url);
    snprintf(s->hdr, sizeof s->hdr, "%s", hdr ? hdr : "");
    s->timeout = timeout;
    pthread_mutex_init(&s->mu, NULL);
    return pthread_create(&s->th, NULL, sse_main, s);
}

/* Wait until the received text contains needle (or the transfer ended). */
static int sse_wait_for(sse_reader *s, const char *needle, double seconds) {
    double t0 = hdc_now();
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int found = s->buf && strstr(s->buf, needle) != NULL, done = s->done;
        pthread_mutex_unlock(&s->mu);
        if (found) return 1;
        if (done || hdc_now() - t0 > seconds) return 0;
        hdc_sleep(0.02);
    }
}

static void sse_join(sse_reader *s) {
    pthread_join(s->th, NULL);
    pthread_mutex_destroy(&s->mu);
}

static int count_of(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = text; p && (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

/* ---- helpers ------------------------------------------------------------------ */

static long long create_run(hdc_conn *c, const char *base, const char *spec, char *token,
                            size_t cap) {
    char url[256];
    snprintf(url, sizeof url, "%s/v1/runs", base);
    hdc_resp r;
    hdc_req(c, "POST", url, HDC_ADMIN, spec, strlen(spec), "Content-Type: application/json", &r);
    CHECK_EQ_INT(r.status, 201);
    long long id = hdc_json_int(r.body, "id", -1);
    hdc_json_str(r.body, "worker_token", token, cap);
    hdc_resp_free(&r);
    return id;
}

static long stop_after = 0;
static void stop_hook(sim_t *s, long n) {
    if (stop_after && n >= stop_after) s->errors = 1; /* makes sim_drive return */
}

/* CPU seconds (user + system) the process has used. */
static double cpu_seconds(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int has_spark(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; p[0] && p[1] && p[2]; p++)
        if (p[0] == 0xe2 && p[1] == 0x96 && p[2] >= 0x81 && p[2] <= 0x88) return 1;
    return 0;
}

static void check_checker(void) {
    /* The checker itself must refuse broken expositions. */
    static const char *const bad[] = {
        "x 1\n",                                                    /* no HELP/TYPE */
        "# HELP x h\n# TYPE x counter\nx 1\n",                      /* counter without _total */
        "# HELP x h\n# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n", /* duplicate */
        "# HELP x h\n# TYPE x gauge\nx{1a=\"1\"} 1\n",              /* label name */
        "# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n",                 /* unterminated */
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\n"
        "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n", /* not cumulative */
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum "
        "1\nh_count 3\n",
        "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", /* no +Inf */
        "# HELP x h\n# TYPE x gauge\nx abc\n",                                        /* value */
    };
    pc_state st;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_MSG(pc_check(bad[i], &st) != 0, "checker accepted case %zu", i);
    CHECK_MSG(
        pc_check("# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                 "h_sum 1.5\nh_count 2\n# HELP g g\n# TYPE g gauge\ng{a=\"x\\\"y\"} NaN\n",
                 &st) == 0,
        "checker refused a good exposition: %s", st.err);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    check_checker();
    hdc_server srv;
    if (hdc_tmpdir(&srv, "observe") != 0 || hdc_start(&srv) != 0) {
        fprintf(stderr, "cannot start the server\n");
        return 1;
    }
    hdc_conn c;
    hdc_conn_init(&c);
    char url[512], tok_a[128], tok_b[128], tok_c[128], hdr[200];
    hdc_resp r;

    /* 1. Run A, followed live over SSE while a simulated worker finishes it. */
    long long a = create_run(&c, srv.base, spec_a, tok_a, sizeof tok_a);
    sse_reader ev;
    snprintf(url, sizeof url, "%s/v1/runs/%lld/events?heartbeat=0.5", srv.base, a);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", HDC_ADMIN);
    CHECK(sse_start(&ev, url, hdr, 60.0) == 0);
    CHECK(sse_wait_for(&ev, "event: state", 5.0));
    sim_t sim;
    CHECK(sim_init(&sim, &srv, a, tok_a, spec_a, 1) == 0);
    CHECK_EQ_INT(sim_drive(&sim, 60.0), 0);
    sim_clear(&sim);
    /* The stream ends by itself once the run is finished. */
    double t0 = hdc_now();
    while (!ev.done && hdc_now() - t0 < 10.0) hdc_sleep(0.02);
    CHECK_MSG(ev.done, "the event stream of a completed run did not end");
    sse_join(&ev);
    CHECK_EQ_INT(ev.curl_rc, 0);
    CHECK_EQ_INT(ev.status, 200);
    const char *txt = ev.buf ? ev.buf : "";
    CHECK(strncmp(txt, "retry: ", 7) == 0);
    CHECK(strstr(txt, "event: state\ndata: {\"run\":") != NULL);
    CHECK(count_of(txt, "event: step\n") >= 1);
    CHECK(count_of(txt, "event: episode\n") >= 5); /* every episode is reported */
    CHECK(count_of(txt, "event: theta\n") >= 1);
    CHECK(count_of(txt, "event: eval\n") >= 5);
    CHECK(strstr(txt, "\"stream\":\"test\"") != NULL);
    CHECK(strstr(txt, "\"state\":\"completed\",\"phase\":\"done\",\"finished\":true") != NULL);
    CHECK(strstr(txt, "id: 1\n") != NULL);
    for (int m = 1; m <= 5; m++) {
        char needle[64];
        snprintf(needle, sizeof needle, "data: {\"episode\":%d,\"train_loss\":", m);
        CHECK_MSG(strstr(txt, needle) != NULL, "no episode event for episode %d", m);
    }
    /* The last message is the finished state. */
    const char *last = txt;
    for (const char *q = txt; (q = strstr(q, "event: ")) != NULL; q++) last = q;
    CHECK(strncmp(last, "event: state", 12) == 0);
    free(ev.buf);

    /* Last-Event-ID resumes after that id (the run is finished: replay, end). */
    snprintf(url, sizeof url, "%s/v1/runs/%lld/events?access_token=%s", srv.base, a, HDC_ADMIN);
    CHECK(sse_start(&ev, url, "Last-Event-ID: 2", 10.0) == 0);
    sse_join(&ev);
    CHECK_EQ_INT(ev.curl_rc, 0);
    txt = ev.buf ? ev.buf : "";
    CHECK(strstr(txt, "id: 3\n") != NULL && strstr(txt, "id: 2\n") == NULL &&
          strstr(txt, "id: 1\n") == NULL);
    free(ev.buf);

    /* Events auth: none -> 401; another run's worker token -> 403; bad id -> 400. */
    long long b = create_run(&c, srv.base, spec_b, tok_b, sizeof tok_b);
    snprintf(url, sizeof url, "%s/v1/runs/%lld/events", srv.base, a);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, NULL, NULL, 0, NULL, &r), 401);
    hdc_resp_free(&r);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, tok_b, NULL, 0, NULL, &r), 403);
    hdc_resp_free(&r);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, "Last-Event-ID: x", &r), 400);
    hdc_resp_free(&r);

    /* 2. Run B driven partly: text status while it runs. */
    CHECK(sim_init(&sim, &srv, b, tok_b, spec_b, 2) == 0);
    sim.after_req = stop_hook;
    stop_after = 400;
    sim_drive(&sim, 30.0);
    sim_clear(&sim);
    snprintf(url, sizeof url, "%s/v1/runs/%lld?format=text", srv.base, b);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r), 200);
    printf("%s", r.body);
    char want[64];
    snprintf(want, sizeof want, "run %lld  running  phase ", b);
    CHECK(strstr(r.body, want) != NULL);
    static const char *const fields[] = {
        "  episode ",     "  step ",     "  lam version ",    "  theta ",
        "  train loss ",  "  val loss ", "  val loss trend ", "  workers ",
        "LAST HEARTBEAT", " s ago",      "  leases ",         " / 500"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        CHECK_MSG(strstr(r.body, fields[i]) != NULL, "text status lacks '%s'", fields[i]);
    CHECK(has_spark(r.body));
    hdc_resp_free(&r);
    /* The worker token of run B may read its own run's text, not run A's. */
    CHECK_EQ_INT(hdc_req(&c, "GET", url, tok_b, NULL, 0, NULL, &r), 200);
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs/%lld?format=text", srv.base, a);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, tok_b, NULL, 0, NULL, &r), 403);
    hdc_resp_free(&r);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, NULL, NULL, 0, NULL, &r), 401);
    hdc_resp_free(&r);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r), 200);
    printf("%s", r.body);
    CHECK(strstr(r.body, "completed  phase done") != NULL);
    CHECK(strstr(r.body, "meta-test loss") != NULL);
    CHECK(has_spark(r.body));
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs/%lld?format=xml", srv.base, a);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r), 400);
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs?format=text", srv.base);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r), 200);
    printf("%s", r.body);
    CHECK(strncmp(r.body, "ID    STATE", 11) == 0);
    CHECK(count_of(r.body, "\n") == 3);
    CHECK(strstr(r.body, "completed") != NULL && strstr(r.body, "running") != NULL);
    hdc_resp_free(&r);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, tok_b, NULL, 0, NULL, &r),
                 403); /* the list is admin only */
    hdc_resp_free(&r);

    /* 3. /metrics: a refused step post first, then the strict checker. */
    snprintf(url, sizeof url, "%s/v1/leases/0123456789abcdef0123456789abcdef/steps/1", srv.base);
    long st_refused =
        hdc_req(&c, "POST", url, tok_b, "x", 1, "Content-Type: application/octet-stream", &r);
    CHECK(st_refused >= 400);
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/metrics", srv.base);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, NULL, NULL, 0, NULL, &r), 200);
    pc_state pst;
    CHECK_MSG(pc_check(r.body, &pst) == 0, "metrics format: %s", pst.err);
    CHECK(strstr(r.body, "\nhd_up 1\n") != NULL);
    CHECK(strstr(r.body, "hd_runs{state=\"completed\"} 1\n") != NULL);
    CHECK(strstr(r.body, "hd_runs{state=\"running\"} 1\n") != NULL);
    char line[128];
    snprintf(line, sizeof line, "hd_lam_version{run=\"%lld\"} ", a);
    CHECK(strstr(r.body, line) != NULL);
    snprintf(line, sizeof line, "hd_posts_total{run=\"%lld\"} ", b);
    CHECK(strstr(r.body, line) != NULL);
    CHECK(strstr(r.body, "hd_posts_refused_total{reason=\"stale\"} ") != NULL);
    CHECK(strstr(r.body,
                 "hd_http_request_duration_seconds_bucket{class=\"lease_step\",le=\"+Inf\"} ") !=
          NULL);
    CHECK(strstr(r.body, "hd_leases_active{run=") != NULL &&
          strstr(r.body, "hd_workers{run=") != NULL);
    CHECK(strstr(r.body, HDC_ADMIN) == NULL && strstr(r.body, tok_a) == NULL &&
          strstr(r.body, "sinusoid") == NULL);
    long long refused = 0;
    for (const char *q = r.body; (q = strstr(q, "\nhd_posts_refused_total{")) != NULL; q++)
        refused += strtoll(strchr(q, '}') + 2, NULL, 10);
    CHECK_MSG(refused >= 1, "no refused step post counted");
    char mf[400];
    snprintf(mf, sizeof mf, "%s/metrics.txt", srv.dir);
    FILE *f = fopen(mf, "w");
    if (f) {
        fwrite(r.body, 1, r.len, f);
        fclose(f);
    }
    hdc_resp_free(&r);
    if (system("command -v promtool >/dev/null 2>&1") == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "promtool check metrics < '%s'", mf);
        int rc = system(cmd);
        CHECK_MSG(rc == 0, "promtool check metrics failed (%d)", rc);
        printf("promtool check metrics: %s\n", rc == 0 ? "ok" : "FAILED");
    } else {
        printf("SKIP promtool check (promtool not installed; the strict checker passed)\n");
    }

    /* 4. The dashboard page is served without a token and holds no data. */
    snprintf(url, sizeof url, "%s/", srv.base);
    CHECK_EQ_INT(hdc_req(&c, "GET", url, NULL, NULL, 0, NULL, &r), 200);
    CHECK(strstr(r.body, "<!DOCTYPE html>") != NULL && strstr(r.body, "EventSource") != NULL);
    CHECK(strstr(r.body, "http://") == NULL ||
          strstr(r.body, "http://www.w3.org/2000/svg") != NULL);
    hdc_resp_free(&r);

    /* 5. An idle stream costs little CPU and sends heartbeats; SIGTERM with
     * it open exits 0 within 5 s and ends the stream. */
    long long cid = create_run(&c, srv.base, spec_b, tok_c, sizeof tok_c);
    snprintf(url, sizeof url, "%s/v1/runs/%lld/events?heartbeat=0.3&access_token=%s", srv.base, cid,
             HDC_ADMIN);
    CHECK(sse_start(&ev, url, NULL, 60.0) == 0);
    CHECK(sse_wait_for(&ev, "event: state", 5.0));
    double cpu0 = cpu_seconds(srv.pid);
    hdc_sleep(2.0);
    double cpu1 = cpu_seconds(srv.pid);
    CHECK_MSG(cpu1 - cpu0 < 0.3, "server used %.2f s CPU in 2 s with an idle stream", cpu1 - cpu0);
    pthread_mutex_lock(&ev.mu);
    int hb = count_of(ev.buf, ": heartbeat\n\n");
    pthread_mutex_unlock(&ev.mu);
    CHECK_MSG(hb >= 3, "heartbeats: %d", hb);
    t0 = hdc_now();
    int ws = hdc_stop(&srv, SIGTERM);
    double took = hdc_now() - t0;
    printf("SIGTERM with an open event stream: exit after %.3f s\n", took);
    CHECK_MSG(took < 5.0, "SIGTERM took %.1f s", took);
    CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    t0 = hdc_now();
    while (!ev.done && hdc_now() - t0 < 5.0) hdc_sleep(0.02);
    CHECK(ev.done);
    sse_join(&ev);
    free(ev.buf);

    hdc_conn_clear(&c);
    hdc_cleanup(&srv);
    curl_global_cleanup();
    return check_finish("test_observe");
}
