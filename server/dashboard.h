/* The dashboard page (GET /): one HTML document with its CSS and
 * JavaScript inline, embedded in the binary at build time from
 * server/assets/dashboard.html (server/assets/embed.sh). It loads nothing
 * from the network but this server's API. Thread-safe (read-only data). */
#ifndef HD_SERVER_DASHBOARD_H
#define HD_SERVER_DASHBOARD_H

#include <stddef.h>

/* The page bytes (static, never freed) and their length in *len. */
const char *dashboard_page(size_t *len);

#endif
