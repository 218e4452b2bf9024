/* The worker's option table. getenv() is called only here. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

typedef enum { OPT_STR, OPT_LONG, OPT_DOUBLE, OPT_SHARD, OPT_LEVEL, OPT_FLAG } opt_type;

typedef struct {
    const char *name; /* flag without the dashes */
    opt_type type;
    const char *def; /* default as text, NULL = none */
    double min, max; /* bounds for numbers */
    const char *env; /* environment variable */
    const char *help;
} opt_row;

static const opt_row opts[] = {
    {"server", OPT_STR, NULL, 0, 0, "HD_SERVER",
     "hdserver base URL, e.g. http://10.0.0.5:8080 (required)"},
    {"token", OPT_STR, NULL, 0, 0, "HD_TOKEN", "the run's worker token (required)"},
    {"run", OPT_LONG, "0", 0, 1e15, "HD_RUN", "run id to work on; 0 = any run with work"},
    {"name", OPT_STR, "", 0, 0, "HD_NAME", "worker name (default host-pid)"},
    {"shard", OPT_SHARD, "0/1", 0, 0, "HD_SHARD", "I/N: work only on shard I of N of the data"},
    {"slots", OPT_LONG, "1", 1, 64, "HD_SLOTS", "most task slots per lease"},
    {"retry-deadline", OPT_DOUBLE, "300", 0.1, 86400, "HD_RETRY_DEADLINE",
     "seconds to retry a request (server down) before giving up"},
    {"poll-wait", OPT_LONG, "10", 1, 60, "HD_POLL_WAIT",
     "long-poll seconds when waiting for a new lam"},
    {"log-level", OPT_LEVEL, "info", 0, 0, "HD_LOG_LEVEL", "error, warn, info or debug"},
    {"no-progress", OPT_FLAG, NULL, 0, 0, "HD_NO_PROGRESS",
     "no one-line progress display on a terminal"},
    {"exit-when-done", OPT_FLAG, NULL, 0, 0, "HD_EXIT_WHEN_DONE",
     "without --run: exit when no run has work"},
};
#define N_OPTS (sizeof opts / sizeof *opts)

void wconfig_usage(FILE *f) {
    fputs(
        "usage: hdworker --server URL --token TOKEN [options]\n"
        "       hdworker --local SPEC.json --out DIR [--lambda L.npy] [--phi P.npy]\n"
        "       hdworker probe --spec SPEC.json --lambda L.npy --phi P.npy --task T.npz --out DIR\n"
        "daemon options (flag, environment variable, default):\n",
        f);
    for (size_t i = 0; i < N_OPTS; i++)
        fprintf(f, "  --%-16s %-18s %-6s %s\n", opts[i].name, opts[i].env,
                opts[i].def ? opts[i].def : "", opts[i].help);
}

static hd_rc set_opt(const opt_row *o, const char *val, const char *src, wconfig *c, hd_err *err) {
    char *end;
    if (o->type == OPT_FLAG) {
        int on =
            !val || strcmp(val, "1") == 0 || strcmp(val, "true") == 0 || strcmp(val, "yes") == 0;
        if (strcmp(o->name, "no-progress") == 0)
            c->progress = !on;
        else
            c->exit_when_done = on;
        return HD_OK;
    }
    if (o->type == OPT_STR) {
        char *dst = strcmp(o->name, "server") == 0  ? c->server
                    : strcmp(o->name, "token") == 0 ? c->token
                                                    : c->name;
        size_t cap = strcmp(o->name, "server") == 0  ? sizeof c->server
                     : strcmp(o->name, "token") == 0 ? sizeof c->token
                                                     : sizeof c->name;
        if (strlen(val) >= cap)
            return hd_err_set(err, HD_EINVAL, "--%s (%s): value too long", o->name, src);
        memcpy(dst, val, strlen(val) + 1);
        return HD_OK;
    }
    if (o->type == OPT_LEVEL) {
        int l = hd_log_level_parse(val);
        if (l < 0)
            return hd_err_set(err, HD_EINVAL, "--%s (%s): '%s' is not error, warn, info or debug",
                              o->name, src, val);
        c->log_level = l;
        return HD_OK;
    }
    if (o->type == OPT_SHARD) {
        errno = 0;
        long i = strtol(val, &end, 10);
        if (end == val || *end != '/' || errno)
            return hd_err_set(err, HD_EINVAL, "--shard (%s): '%s' is not I/N", src, val);
        const char *p = end + 1;
        long n = strtol(p, &end, 10);
        if (end == p || *end || errno)
            return hd_err_set(err, HD_EINVAL, "--shard (%s): '%s' is not I/N", src, val);
        if (n < 1 || n > 1024 || i < 0 || i >= n)
            return hd_err_set(err, HD_EINVAL, "--shard (%s): '%s' needs 0 <= I < N <= 1024", src,
                              val);
        c->shard = (int)i;
        c->shards = (int)n;
        return HD_OK;
    }
    errno = 0;
    double v = strtod(val, &end);
    if (end == val || *end || errno || v < o->min || v > o->max)
        return hd_err_set(err, HD_EINVAL, "--%s (%s): '%s' is not a number in [%g, %g]", o->name,
                          src, val, o->min, o->max);
    if (o->type == OPT_LONG && v != (double)(long)v)
        return hd_err_set(err, HD_EINVAL, "--%s (%s): '%s' is not an integer", o->name, src, val);
    if (strcmp(o->name, "run") == 0)
        c->run = (long)v;
    else if (strcmp(o->name, "slots") == 0)
        c->slots = (int)v;
    else if (strcmp(o->name, "poll-wait") == 0)
        c->poll_wait = (int)v;
    else
        c->retry_deadline = v;
    return HD_OK;
}

hd_rc wconfig_load(int argc, char **argv, wconfig *c, int *help, hd_err *err) {
    memset(c, 0, sizeof *c);
    c->progress = 1;
    *help = 0;
    hd_rc rc;
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].def && (rc = set_opt(&opts[i], opts[i].def, "default", c, err)) != HD_OK)
            return rc;
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (v && *v && (rc = set_opt(&opts[i], v, opts[i].env, c, err)) != HD_OK) return rc;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            *help = 1;
            return HD_OK;
        }
        if (strncmp(arg, "--", 2) != 0)
            return hd_err_set(err, HD_EINVAL, "unexpected argument '%s'", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const opt_row *o = NULL;
        for (size_t i = 0; i < N_OPTS; i++)
            if (strlen(opts[i].name) == nl && strncmp(opts[i].name, name, nl) == 0) o = &opts[i];
        if (!o) return hd_err_set(err, HD_EINVAL, "unknown option '%s' (see --help)", arg);
        const char *val = NULL;
        if (eq)
            val = eq + 1;
        else if (o->type != OPT_FLAG) {
            if (a + 1 >= argc) return hd_err_set(err, HD_EINVAL, "--%s needs a value", o->name);
            val = argv[++a];
        }
        if ((rc = set_opt(o, val, "flag", c, err)) != HD_OK) return rc;
    }
    if (!c->server[0]) return hd_err_set(err, HD_EINVAL, "--server (or HD_SERVER) is required");
    if (!c->token[0]) return hd_err_set(err, HD_EINVAL, "--token (or HD_TOKEN) is required");
    if (!c->name[0]) {
        char host[64] = "worker";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = 0;
        snprintf(c->name, sizeof c->name, "%s-%ld", host, (long)getpid());
    }
    return HD_OK;
}
