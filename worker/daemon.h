/* The worker daemon: the online loop against hdserver (register, lease,
 * train/estimate/evaluate, post, complete, lease again) with the same
 * episode code as the local runner, so a distributed sync run reproduces
 * `hdworker --local`. */
#ifndef HD_DAEMON_H
#define HD_DAEMON_H

/* Entry point for `hdworker --server URL --token TOKEN ...`. Returns the
 * exit status: 0 when the run ended or on SIGTERM, 1 on a fatal error (server
 * unreachable past the deadline, token refused, no such run), 2 on bad
 * options. */
int daemon_main(int argc, char **argv);

#endif
