/* libmicrohttpd wrapper (http.h). */
#include "http.h"

#include <arpa/inet.h>
#include <cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "srvutil.h"

#define HTTP_MAX_URL 2048       /* longer paths get 414 from us */
#define HTTP_FILE_MAX (1 << 20) /* TLS PEM files */

struct http_server {
    struct MHD_Daemon *d;
    const server_config *cfg;
    const http_routes *routes;
    void *ctx;
    char *tls_cert, *tls_key;      /* PEM text, owned */
    atomic_uint_fast64_t requests; /* requests answered */
    atomic_uint_fast64_t errors;   /* error replies */
};

struct http_req {
    http_server_t *srv;
    struct MHD_Connection *conn;
    char method[16];   /* truncated method */
    char *path;        /* owned copy of the (unescaped) path */
    uint8_t *body;     /* owned, body_cap bytes */
    size_t body_len;   /* bytes received */
    size_t body_cap;   /* allocated */
    size_t body_limit; /* maximum accepted */
    int too_big;       /* 1 once the body crossed the limit */
    int replied;       /* 1 once a response is queued */
    int status;        /* status of the queued response */
    double t0;         /* monotonic start */
    int started;       /* 1 after the first access-handler call */
    int bad_path;      /* 1: the raw path holds an encoded NUL or '/' */
    void *route_data;  /* routes' slot */
};

/* ---- accessors ------------------------------------------------------------ */

const char *http_method(const http_req_t *r) { return r->method; }
const char *http_path(const http_req_t *r) { return r->path; }
const char *http_header(const http_req_t *r, const char *name) {
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}
const char *http_query(const http_req_t *r, const char *name) {
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}
const uint8_t *http_body(const http_req_t *r, size_t *len) {
    *len = r->body_len;
    return r->body_len ? r->body : NULL;
}
int64_t http_content_length(const http_req_t *r) {
    const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    int64_t v;
    if (!cl || srvutil_parse_i64(cl, 0, INT64_MAX, &v) != 0) return -1;
    return v;
}
const char *http_bearer(const http_req_t *r) {
    const char *a = http_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!a || strncmp(a, "Bearer ", 7) != 0) return NULL;
    a += 7;
    while (*a == ' ') a++;
    return *a ? a : NULL;
}
void **http_route_data(http_req_t *r) { return &r->route_data; }

uint64_t http_requests_total(const http_server_t *s) { return atomic_load(&s->requests); }
uint64_t http_errors_total(const http_server_t *s) { return atomic_load(&s->errors); }

/* ---- replies -------------------------------------------------------------- */

static void add_headers(struct MHD_Response *resp, const char *const *hdrs) {
    for (; hdrs && hdrs[0] && hdrs[1]; hdrs += 2) MHD_add_response_header(resp, hdrs[0], hdrs[1]);
}

static void queue(http_req_t *r, int status, struct MHD_Response *resp, const char *ctype,
                  const char *const *hdrs) {
    HD_ASSERT(!r->replied);
    r->replied = 1;
    if (!resp) {
        /* Out of memory building the response: a bodiless 500. */
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        status = 500;
        ctype = NULL;
        hdrs = NULL;
        if (!resp) return;
    }
    if (ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    add_headers(resp, hdrs);
    r->status = status;
    if (MHD_queue_response(r->conn, (unsigned)status, resp) != MHD_YES)
        HD_LOG_WARN("http queue_response failed path=%s status=%d", r->path ? r->path : "-",
                    status);
    MHD_destroy_response(resp);
}

void http_reply_take(http_req_t *r, int status, const char *ctype, uint8_t *data, size_t len,
                     const char *const *hdrs) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, data, data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) free(data);
    queue(r, status, resp, ctype, hdrs);
}

void http_reply_json_take(http_req_t *r, int status, char *json, const char *const *hdrs) {
    if (!json) {
        hd_err e = {HD_ENOMEM, "out of memory building the response"};
        http_reply_error(r, &e);
        return;
    }
    http_reply_take(r, status, "application/json", (uint8_t *)json, strlen(json), hdrs);
}

void http_reply_json(http_req_t *r, int status, const char *json, const char *const *hdrs) {
    http_reply_json_take(r, status, strdup(json), hdrs);
}

static void blob_free_cb(void *cls) { blob_unref(cls); }

void http_reply_blob(http_req_t *r, int status, const char *ctype, blob_t *b,
                     const char *const *hdrs) {
    /* The buffer is only read by MHD; the API takes a non-const pointer. */
    union {
        const uint8_t *c;
        void *p;
    } u = {.c = blob_data(b)};
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback_cls(blob_len(b), u.p, blob_free_cb, b);
    if (!resp) blob_unref(b);
    queue(r, status, resp, ctype, hdrs);
}

void http_reply_empty(http_req_t *r, int status, const char *const *hdrs) {
    queue(r, status, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT), NULL, hdrs);
}

/* The single rc -> status table. */
int http_status_of(hd_rc rc) {
    switch (rc) {
    case HD_OK:
        return 200;
    case HD_EINVAL:
    case HD_EFORMAT:
    case HD_ENONFINITE:
        return 400;
    case HD_EAUTH:
        return 401;
    case HD_EFORBIDDEN:
        return 403;
    case HD_ENOTFOUND:
        return 404;
    case HD_ECONFLICT:
        return 409;
    case HD_EGONE:
        return 410;
    case HD_ETOOBIG:
        return 413;
    case HD_EBUSY:
    case HD_ENOMEM:
        return 503;
    case HD_ETIMEOUT:
        return 504;
    case HD_ENET:
        return 502;
    default:
        return 500;
    }
}

void http_reply_error_status(http_req_t *r, int status, const hd_err *e) {
    hd_rc rc = e && e->code != HD_OK ? e->code : HD_EINTERNAL;
    const char *msg = e && e->msg[0] ? e->msg : hd_rc_name(rc);
    if (!status) status = http_status_of(rc);
    atomic_fetch_add(&r->srv->errors, 1);
    if (status >= 500)
        HD_LOG_ERROR("http error status=%d code=%s path=%s msg=\"%s\"", status, hd_rc_name(rc),
                     r->path, msg);
    else
        HD_LOG_WARN("http error status=%d code=%s path=%s msg=\"%s\"", status, hd_rc_name(rc),
                    r->path, msg);
    cJSON *root = cJSON_CreateObject(), *o = cJSON_AddObjectToObject(root, "error");
    char *json = NULL;
    if (o && cJSON_AddStringToObject(o, "code", hd_rc_name(rc)) &&
        cJSON_AddStringToObject(o, "message", msg))
        json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) {
        http_reply_empty(r, status, NULL);
        return;
    }
    static const char *const close_hdr[] = {"Connection", "close", NULL};
    /* A 413 is sent before the body was read: the connection cannot be reused. */
    http_reply_take(r, status, "application/json", (uint8_t *)json, strlen(json),
                    status == 413 ? close_hdr : NULL);
}

void http_reply_error(http_req_t *r, const hd_err *e) { http_reply_error_status(r, 0, e); }

/* ---- MHD callbacks -------------------------------------------------------- */

/* Called by MHD with the raw (still percent-encoded) URI before anything
 * else: the request context starts here, so that the raw path can be
 * checked for encodings that the unescaped path hides (%00, %2f). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn) {
    http_server_t *s = cls;
    http_req_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->srv = s;
    r->conn = conn;
    r->t0 = srvutil_mono();
    for (const char *p = uri; *p && *p != '?'; p++) {
        if (p[0] == '%' && p[1] && p[2]) {
            if ((p[1] == '0' && p[2] == '0') || (p[1] == '2' && (p[2] == 'f' || p[2] == 'F')) ||
                (p[1] == '5' && (p[2] == 'c' || p[2] == 'C')))
                r->bad_path = 1;
        }
    }
    return r;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls) {
    http_server_t *s = cls;
    http_req_t *r = *con_cls;
    (void)version;
    if (!r) r = *con_cls = on_uri(s, url, conn);
    if (!r) return MHD_NO;
    if (!r->started) {
        r->started = 1;
        snprintf(r->method, sizeof r->method, "%s", method);
        size_t ul = strnlen(url, HTTP_MAX_URL + 1);
        r->path = malloc(ul + 1);
        if (!r->path) return MHD_NO;
        memcpy(r->path, url, ul);
        r->path[ul] = 0;
        if (ul > HTTP_MAX_URL) {
            r->too_big = 2; /* answered 414 on the next call */
            return MHD_YES;
        }
        r->body_limit = s->routes->body_limit(s->ctx, r);
        int64_t cl = http_content_length(r);
        if (cl > 0 && (uint64_t)cl > r->body_limit) {
            /* Refuse now, before reading the body: MHD then closes the
             * connection after this response instead of reading on. */
            hd_err e;
            hd_err_clear(&e);
            hd_err_set(&e, HD_ETOOBIG,
                       "request body of %lld bytes exceeds the limit of %zu bytes for %s",
                       (long long)cl, r->body_limit, r->path);
            r->too_big = 1;
            http_reply_error(r, &e);
            return MHD_YES;
        }
        if (cl > 0) {
            r->body = malloc((size_t)cl);
            if (!r->body) return MHD_NO;
            r->body_cap = (size_t)cl;
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->replied || r->too_big) return r->replied ? MHD_NO : MHD_YES;
        if (n > r->body_limit - r->body_len) {
            r->too_big = 1;
            free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            return MHD_YES; /* the rest is discarded; 413 at the end */
        }
        if (r->body_len + n > r->body_cap) {
            size_t nc = r->body_cap ? r->body_cap : 4096;
            while (nc < r->body_len + n) nc = nc > r->body_limit / 2 ? r->body_limit : nc * 2;
            uint8_t *nb = realloc(r->body, nc);
            if (!nb) return MHD_NO;
            r->body = nb;
            r->body_cap = nc;
        }
        memcpy(r->body + r->body_len, upload, n);
        r->body_len += n;
        return MHD_YES;
    }
    if (r->replied) return MHD_YES;
    if (r->bad_path) {
        hd_err e;
        hd_err_clear(&e);
        hd_err_set(&e, HD_EINVAL, "encoded NUL, '/' or '\\' in the request path");
        http_reply_error(r, &e);
        return MHD_YES;
    }
    if (r->too_big) {
        hd_err e;
        hd_err_clear(&e);
        if (r->too_big == 2) {
            hd_err_set(&e, HD_ETOOBIG, "request path longer than %d bytes", HTTP_MAX_URL);
            http_reply_error_status(r, 414, &e);
        } else {
            hd_err_set(&e, HD_ETOOBIG, "request body exceeds the limit of %zu bytes",
                       r->body_limit);
            http_reply_error(r, &e);
        }
        return MHD_YES;
    }
    s->routes->handle(s->ctx, r);
    if (!r->replied) {
        hd_err e;
        hd_err_clear(&e);
        hd_err_set(&e, HD_EINTERNAL, "handler gave no answer");
        http_reply_error(r, &e);
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    http_server_t *s = cls;
    http_req_t *r = *con_cls;
    (void)conn;
    if (!r) return;
    double us = (srvutil_mono() - r->t0) * 1e6;
    atomic_fetch_add(&s->requests, 1);
    if (s->routes->completed)
        s->routes->completed(s->ctx, r, r->replied ? r->status : 0, us * 1e-6);
    HD_LOG_INFO("request method=%s path=%s status=%d us=%.0f%s", r->method, r->path ? r->path : "-",
                r->replied ? r->status : 0, us,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted=1");
    free(r->body);
    free(r->path);
    free(r);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    char buf[512];
    (void)cls;
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    HD_LOG_WARN("libmicrohttpd msg=\"%s\"", buf);
}

static char *read_file(const char *path, hd_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        hd_err_set(err, HD_EINVAL, "open %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(HTTP_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, HTTP_FILE_MAX + 1, f) : 0;
    fclose(f);
    if (!buf || n == 0 || n > HTTP_FILE_MAX) {
        free(buf);
        hd_err_set(err, HD_EINVAL, "%s: empty, unreadable or larger than %d bytes", path,
                   HTTP_FILE_MAX);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

static hd_rc parse_listen(const char *listen, struct sockaddr_in *sa, hd_err *err) {
    const char *colon = strrchr(listen, ':');
    if (!colon) return hd_err_set(err, HD_EINVAL, "--listen '%s': expected host:port", listen);
    char host[256];
    size_t hl = (size_t)(colon - listen);
    if (hl == 0 || hl >= sizeof host)
        return hd_err_set(err, HD_EINVAL, "--listen '%s': bad host", listen);
    memcpy(host, listen, hl);
    host[hl] = 0;
    int64_t port;
    if (srvutil_parse_i64(colon + 1, 0, 65535, &port) != 0)
        return hd_err_set(err, HD_EINVAL, "--listen '%s': port must be 0..65535", listen);
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
    if (strcmp(host, "*") == 0) snprintf(host, sizeof host, "0.0.0.0");
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return hd_err_set(err, HD_EINVAL, "--listen '%s': host must be an IPv4 address", listen);
    return HD_OK;
}

hd_rc http_start(const server_config *cfg, const http_routes *routes, void *ctx,
                 http_server_t **out, unsigned *port, hd_err *err) {
    struct sockaddr_in sa;
    hd_rc rc = parse_listen(cfg->listen, &sa, err);
    if (rc != HD_OK) return rc;
    http_server_t *s = calloc(1, sizeof *s);
    if (!s) return hd_err_set(err, HD_ENOMEM, "http: out of memory");
    s->cfg = cfg;
    s->routes = routes;
    s->ctx = ctx;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (cfg->threads == 0)
        flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
    else
        flags |= MHD_USE_EPOLL;
    if (*cfg->tls_cert) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            rc = hd_err_set(err, HD_EINVAL, "--tls-cert: this libmicrohttpd has no TLS support");
            goto fail;
        }
        if (!(s->tls_cert = read_file(cfg->tls_cert, err)) ||
            !(s->tls_key = read_file(cfg->tls_key, err))) {
            rc = HD_EINVAL;
            goto fail;
        }
        flags |= MHD_USE_TLS;
    }
    struct MHD_OptionItem ops[12];
    int n = 0;
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &sa};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, s};
    ops[n++] =
        (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->conn_limit, NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT,
                                       (intptr_t)(cfg->max_wait + 120), NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, 64 * 1024, NULL};
    if (cfg->threads > 0)
        ops[n++] =
            (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)cfg->threads, NULL};
    if (s->tls_cert) {
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert};
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key};
    }
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    s->d =
        MHD_start_daemon(flags, 0, NULL, NULL, on_access, s, MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
    if (!s->d) {
        rc = hd_err_set(err, HD_ENET, "cannot listen on %s (address in use or not permitted)",
                        cfg->listen);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    *port = info ? info->port : ntohs(sa.sin_port);
    *out = s;
    return HD_OK;
fail:
    free(s->tls_cert);
    free(s->tls_key);
    free(s);
    return rc;
}

void http_quiesce(http_server_t *s) {
    if (!s || !s->d) return;
    MHD_socket fd = MHD_quiesce_daemon(s->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

void http_stop(http_server_t *s) {
    if (!s) return;
    if (s->d) MHD_stop_daemon(s->d);
    free(s->tls_cert);
    free(s->tls_key);
    free(s);
}

/* ---- streamed replies (http.h; used by events.c) -------------------------- */

typedef struct {
    http_stream_read fn;
    void *cls;
    void (*free_cls)(void *cls);
} stream_ctx;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_ctx *c = cls;
    long n = c->fn(c->cls, pos, buf, max);
    if (n == HTTP_STREAM_END) return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    stream_ctx *c = cls;
    if (c->free_cls) c->free_cls(c->cls);
    free(c);
}

void http_reply_stream(http_req_t *r, int status, const char *ctype, http_stream_read fn, void *cls,
                       void (*free_cls)(void *cls), const char *const *hdrs) {
    stream_ctx *c = malloc(sizeof *c);
    struct MHD_Response *resp = NULL;
    if (c) {
        *c = (stream_ctx){fn, cls, free_cls};
        resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, c, stream_free);
        if (!resp) free(c);
    }
    if (!resp && free_cls) free_cls(cls);
    queue(r, status, resp, ctype, hdrs);
}
