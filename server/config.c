/* The option table of hdserver and its resolution (config.h). */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "srvutil.h"

typedef enum { CFG_STR, CFG_INT, CFG_LEVEL, CFG_SYNC } cfg_type;

typedef struct {
    const char *name; /* flag without "--", also the config-file key */
    cfg_type type;
    const char *def;  /* default as text */
    int64_t min, max; /* bounds for CFG_INT */
    const char *env;  /* environment variable or NULL */
    size_t off;       /* offset in server_config */
    const char *help;
} cfg_opt;

#define OFF(f) offsetof(server_config, f)

static const cfg_opt opts[] = {
    {"db", CFG_STR, "hdserver.db", 0, 0, "HD_DB", OFF(db),
     "SQLite database file (created if missing)"},
    {"listen", CFG_STR, "127.0.0.1:8080", 0, 0, "HD_LISTEN", OFF(listen),
     "address host:port to listen on; port 0 picks a free port (logged and written to "
     "--port-file)"},
    {"port-file", CFG_STR, "", 0, 0, "HD_PORT_FILE", OFF(port_file),
     "write the bound port number to this file once listening"},
    {"admin-token", CFG_STR, "", 0, 0, "HD_ADMIN_TOKEN", OFF(admin_token),
     "bearer token for creating and controlling runs (required, at least 16 characters)"},
    {"tls-cert", CFG_STR, "", 0, 0, "HD_TLS_CERT", OFF(tls_cert),
     "PEM certificate: serve HTTPS (needs --tls-key)"},
    {"tls-key", CFG_STR, "", 0, 0, "HD_TLS_KEY", OFF(tls_key), "PEM private key for --tls-cert"},
    {"max-body-bytes", CFG_INT, "67108864", 1024, 4294967296LL, "HD_MAX_BODY_BYTES",
     OFF(max_body_bytes),
     "largest request body; larger ones get 413 before they are read (tensor posts are also "
     "capped at their run's exact size)"},
    {"lease-seconds", CFG_INT, "30", 1, 86400, "HD_LEASE_SECONDS", OFF(lease_seconds),
     "lease lifetime without heartbeat for runs whose spec does not set lease_seconds"},
    {"log-level", CFG_LEVEL, "info", 0, 3, "HD_LOG_LEVEL", OFF(log_level),
     "error, warn, info or debug"},
    {"threads", CFG_INT, "0", 0, 1024, "HD_THREADS", OFF(threads),
     "0: one thread per connection (default; requests block on group commit and long polls); "
     "N: a pool of N polling threads"},
    {"sync", CFG_SYNC, "normal", 0, 1, "HD_SYNC", OFF(sync_full),
     "SQLite synchronous mode: normal (survives a crash of the process) or full (also power loss)"},
    {"conn-limit", CFG_INT, "1024", 4, 65536, "HD_CONN_LIMIT", OFF(conn_limit),
     "maximum concurrent connections"},
    {"max-wait", CFG_INT, "60", 0, 3600, "HD_MAX_WAIT", OFF(max_wait),
     "longest long-poll wait in seconds"},
    {"bench-discard-posts", CFG_INT, "0", 0, 1, NULL, OFF(discard_posts),
     "benchmarks only: answer step posts after reading the body, without applying or storing it"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static hd_rc set_opt(server_config *c, const cfg_opt *o, const char *val, const char *src,
                     hd_err *err) {
    char *base = (char *)c;
    if (o->type == CFG_STR) {
        size_t n = strlen(val);
        if (n >= CONFIG_STR_MAX)
            return hd_err_set(err, HD_EINVAL, "--%s (from %s): longer than %d characters", o->name,
                              src, CONFIG_STR_MAX - 1);
        memcpy(base + o->off, val, n + 1);
        return HD_OK;
    }
    int64_t v;
    if (o->type == CFG_LEVEL) {
        int l = hd_log_level_parse(val);
        if (l < 0)
            return hd_err_set(err, HD_EINVAL,
                              "--%s (from %s): '%s' is not error, warn, info or debug", o->name,
                              src, val);
        v = l;
    } else if (o->type == CFG_SYNC) {
        if (strcmp(val, "normal") == 0)
            v = 0;
        else if (strcmp(val, "full") == 0)
            v = 1;
        else
            return hd_err_set(err, HD_EINVAL, "--%s (from %s): '%s' is not normal or full", o->name,
                              src, val);
    } else if (srvutil_parse_i64(val, o->min, o->max, &v) != 0) {
        return hd_err_set(err, HD_EINVAL, "--%s (from %s): '%s' is not an integer in [%lld, %lld]",
                          o->name, src, val, (long long)o->min, (long long)o->max);
    }
    memcpy(base + o->off, &v, sizeof v);
    return HD_OK;
}

static const cfg_opt *find_opt(const char *name, size_t len) {
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) return &opts[i];
    return NULL;
}

static void print_help(FILE *out) {
    fprintf(out, "usage: hdserver --admin-token TOKEN [options]\n\n"
                 "hyperparameter server for online hypergradient optimisation (HyperDistill)\n\n"
                 "options (flag > environment > --config file > default):\n");
    fprintf(out, "  --config FILE  read 'name = value' lines (names as the flags, without --)\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const cfg_opt *o = &opts[i];
        fprintf(out, "  --%s VALUE\n      %s\n      default: %s", o->name, o->help,
                *o->def ? o->def : "(none)");
        if (o->type == CFG_INT)
            fprintf(out, ", range [%lld, %lld]", (long long)o->min, (long long)o->max);
        if (o->env) fprintf(out, ", env %s", o->env);
        fputc('\n', out);
    }
}

static hd_rc load_file(server_config *c, const char *path, hd_err *err) {
    FILE *f = fopen(path, "r");
    if (!f) return hd_err_set(err, HD_EINVAL, "--config %s: %s", path, strerror(errno));
    char line[2 * CONFIG_STR_MAX];
    int lineno = 0;
    hd_rc rc = HD_OK;
    while (rc == HD_OK && fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = 0;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#') continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            rc = hd_err_set(err, HD_EINVAL, "%s:%d: expected 'name = value'", path, lineno);
            break;
        }
        char *ke = eq;
        while (ke > p && (ke[-1] == ' ' || ke[-1] == '\t')) ke--;
        char *v = eq + 1;
        while (*v == ' ' || *v == '\t') v++;
        const cfg_opt *o = find_opt(p, (size_t)(ke - p));
        if (!o) {
            rc = hd_err_set(err, HD_EINVAL, "%s:%d: unknown option '%.*s'", path, lineno,
                            (int)(ke - p), p);
            break;
        }
        char src[CONFIG_STR_MAX + 32];
        snprintf(src, sizeof src, "%s:%d", path, lineno);
        rc = set_opt(c, o, v, src, err);
    }
    fclose(f);
    return rc;
}

hd_rc config_load(server_config *c, int argc, char **argv, FILE *out, int *exit_now, hd_err *err) {
    server_config tmp;
    memset(&tmp, 0, sizeof tmp);
    *exit_now = 0;
    hd_rc rc;
    for (size_t i = 0; i < NOPTS; i++)
        if ((rc = set_opt(&tmp, &opts[i], opts[i].def, "default", err)) != HD_OK) return rc;
    /* Pass 1: --help and --config. */
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--help") == 0 || strcmp(argv[a], "-h") == 0) {
            print_help(out);
            *exit_now = 1;
            return HD_OK;
        }
        if (strcmp(argv[a], "--config") == 0) {
            if (a + 1 >= argc) return hd_err_set(err, HD_EINVAL, "--config: missing value");
            if ((rc = load_file(&tmp, argv[++a], err)) != HD_OK) return rc;
        } else if (strncmp(argv[a], "--config=", 9) == 0) {
            if ((rc = load_file(&tmp, argv[a] + 9, err)) != HD_OK) return rc;
        }
    }
    for (size_t i = 0; i < NOPTS; i++) {
        if (!opts[i].env) continue;
        const char *v = getenv(opts[i].env);
        if (!v) continue;
        char src[64];
        snprintf(src, sizeof src, "environment %s", opts[i].env);
        if ((rc = set_opt(&tmp, &opts[i], v, src, err)) != HD_OK) return rc;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strncmp(arg, "--", 2) != 0)
            return hd_err_set(err, HD_EINVAL, "unexpected argument '%s' (see --help)", arg);
        const char *name = arg + 2, *eq = strchr(name, '='), *val;
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        if (nlen == 6 && strncmp(name, "config", 6) == 0) {
            if (!eq) a++;
            continue;
        }
        const cfg_opt *o = find_opt(name, nlen);
        if (!o) return hd_err_set(err, HD_EINVAL, "unknown option '%s' (see --help)", arg);
        if (eq)
            val = eq + 1;
        else if (a + 1 < argc)
            val = argv[++a];
        else
            return hd_err_set(err, HD_EINVAL, "--%s: missing value", o->name);
        if ((rc = set_opt(&tmp, o, val, "command line", err)) != HD_OK) return rc;
    }
    if (strlen(tmp.admin_token) < 16)
        return hd_err_set(err, HD_EINVAL,
                          "--admin-token (or HD_ADMIN_TOKEN) is required and must have at least 16 "
                          "characters; refusing to start without it");
    if (!*tmp.db) return hd_err_set(err, HD_EINVAL, "--db: empty path");
    if ((*tmp.tls_cert != 0) != (*tmp.tls_key != 0))
        return hd_err_set(err, HD_EINVAL, "--tls-cert and --tls-key go together");
    (void)level_names;
    *c = tmp;
    return HD_OK;
}
