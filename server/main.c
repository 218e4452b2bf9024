/* hdserver: the hyperparameter server (ARCHITECTURE.md). main() resolves
 * the configuration, opens the store, rebuilds the runs, starts the
 * committer thread and the HTTP daemon, ticks lease expiry, and on SIGTERM
 * or SIGINT stops accepting, finishes in-flight requests, commits and exits 0. */
#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "events.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "routes.h"
#include "server.h"
#include "store.h"

/* The stop flag: one of the two process-wide globals (STYLE C9). */
static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

typedef struct {
    engine_t *e;
    store_t *st;
} committer_args;

static void *committer_main(void *arg) {
    committer_args *a = arg;
    engine_commit_loop(a->e, a->st);
    return NULL;
}

static int write_port_file(const char *path, unsigned port) {
    char tmp[CONFIG_STR_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fprintf(f, "%u\n", port);
    if (fclose(f) != 0) return -1;
    return rename(tmp, path);
}

static const http_routes route_table = {routes_body_limit, routes_handle, routes_completed};

int main(int argc, char **argv) {
    server_config cfg;
    hd_err err;
    hd_err_clear(&err);
    int exit_now = 0;
    hd_log_init("hdserver", HD_LOG_LVL_INFO);
    if (config_load(&cfg, argc, argv, stdout, &exit_now, &err) != HD_OK) {
        fprintf(stderr, "hdserver: %s\n", err.msg);
        return 2;
    }
    if (exit_now) return 0;
    hd_log_init("hdserver", (hd_log_level)cfg.log_level);
    openblas_set_num_threads(1);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    server_t srv;
    memset(&srv, 0, sizeof srv);
    srv.cfg = &cfg;
    int code = 1;
    if (store_open(cfg.db, (int)cfg.sync_full, &srv.store, &err) != HD_OK) {
        HD_LOG_ERROR("cannot open database db=%s msg=\"%s\"", cfg.db, err.msg);
        return 1;
    }
    engine_cfg ec = {(int)cfg.lease_seconds, (int)cfg.max_wait, cfg.db, (int)cfg.sync_full};
    if (engine_new(&ec, &srv.engine, &err) != HD_OK ||
        engine_load(srv.engine, srv.store, &err) != HD_OK) {
        HD_LOG_ERROR("cannot restore runs db=%s msg=\"%s\"", cfg.db, err.msg);
        engine_free(srv.engine);
        store_close(srv.store);
        return 1;
    }
    int nruns, nactive;
    engine_counts(srv.engine, &nruns, &nactive);
    committer_args ca = {srv.engine, srv.store};
    pthread_t committer;
    if (pthread_create(&committer, NULL, committer_main, &ca) != 0) {
        HD_LOG_ERROR("cannot start the committer thread");
        goto out_engine;
    }
    srv.metrics = metrics_new();
    if (!srv.metrics || events_start(srv.engine, &srv.events, &err) != HD_OK) {
        HD_LOG_ERROR("cannot start the observers msg=\"%s\"",
                     err.msg[0] ? err.msg : "out of memory");
        goto out_committer;
    }
    unsigned port = 0;
    if (http_start(&cfg, &route_table, &srv, &srv.http, &port, &err) != HD_OK) {
        HD_LOG_ERROR("cannot start HTTP msg=\"%s\"", err.msg);
        goto out_committer;
    }
    if (*cfg.port_file && write_port_file(cfg.port_file, port) != 0) {
        HD_LOG_ERROR("cannot write port file path=%s err=\"%s\"", cfg.port_file, strerror(errno));
        goto out_http;
    }
    HD_LOG_INFO(
        "listening addr=%s port=%u db=%s runs=%d active=%d synchronous=%s tls=%d threads=%lld",
        cfg.listen, port, cfg.db, nruns, nactive, cfg.sync_full ? "full" : "normal",
        *cfg.tls_cert != 0, (long long)cfg.threads);
    while (!g_stop) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        engine_tick(srv.engine);
        store_checkpoint(srv.store);
    }
    HD_LOG_INFO("stopping: finishing in-flight requests");
    code = 0;
out_http:
    http_quiesce(srv.http);
    engine_shutdown(srv.engine);
    events_shutdown(srv.events); /* open event streams end now */
    http_stop(srv.http);
out_committer:
    events_free(srv.events);
    metrics_free(srv.metrics);
    engine_stop_committer(srv.engine);
    pthread_join(committer, NULL);
out_engine:
    engine_free(srv.engine);
    store_close(srv.store);
    HD_LOG_INFO("stopped code=%d", code);
    return code;
}
