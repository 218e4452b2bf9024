/* hdworker daemon configuration: one table of options (name, type, default,
 * bounds, environment variable, help), resolved once in the order defaults
 * -> environment -> flags, then read-only (STYLE C15). */
#ifndef HD_WCONFIG_H
#define HD_WCONFIG_H

#include <stdio.h>

#include "err.h"

typedef struct {
    char server[512];      /* base URL of hdserver */
    char token[520];       /* the run's worker token (or the admin token) */
    long run;              /* run id, 0 = any run with work */
    char name[128];        /* worker name shown by the server */
    int shard, shards;     /* this worker's shard I of N */
    int slots;             /* most slots per lease */
    double retry_deadline; /* seconds a request is retried before giving up */
    int poll_wait;         /* long-poll seconds */
    int log_level;         /* hd_log_level */
    int progress;          /* 1: one-line display on a terminal */
    int exit_when_done;    /* without --run: exit when no run has work (else wait) */
} wconfig;

/* Resolve from defaults, environment and argv. Returns HD_OK, or HD_EINVAL
 * with a message naming the option and where its value came from. *help is
 * set when --help was given (nothing else is validated then). */
hd_rc wconfig_load(int argc, char **argv, wconfig *cfg, int *help, hd_err *err);
/* Print --help text generated from the table. */
void wconfig_usage(FILE *f);

#endif
