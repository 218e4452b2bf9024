/* hdserver configuration (STYLE C15): one table of options (name, type,
 * default, bounds, environment variable, help). Values are resolved once in
 * the order defaults -> config file (--config, key = value lines) ->
 * environment -> command-line flags, validated, and then passed down
 * read-only. getenv() is called only here. */
#ifndef HD_SERVER_CONFIG_H
#define HD_SERVER_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"

#define CONFIG_STR_MAX 1024

typedef struct {
    char db[CONFIG_STR_MAX];          /* SQLite database path */
    char listen[CONFIG_STR_MAX];      /* host:port; port 0 = any free port */
    char port_file[CONFIG_STR_MAX];   /* "" or a path that receives the bound port */
    char admin_token[CONFIG_STR_MAX]; /* required, >= 16 characters */
    char tls_cert[CONFIG_STR_MAX];    /* "" = plain HTTP */
    char tls_key[CONFIG_STR_MAX];
    int64_t max_body_bytes; /* request body limit */
    int64_t lease_seconds;  /* default lease lifetime for specs without one */
    int64_t log_level;      /* hd_log_level */
    int64_t threads;        /* 0 = one thread per connection, else a pool */
    int64_t sync_full;      /* 1 = PRAGMA synchronous=FULL */
    int64_t conn_limit;     /* maximum concurrent connections */
    int64_t max_wait;       /* longest long-poll, seconds */
    int64_t discard_posts;  /* bench only: read step bodies and discard them */
} server_config;

/* Resolve the configuration from argv (borrowed). Prints --help to out and
 * sets *exit_now when asked for help. Returns HD_OK or HD_EINVAL with the
 * option and its source named in err. */
hd_rc config_load(server_config *c, int argc, char **argv, FILE *out, int *exit_now, hd_err *err);

#endif
