/* libcurl client with keep-alive, bounded bodies and retry/backoff. */
#include "client.h"

#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "rng.h"

#define CLIENT_MAX_BODY (256u << 20) /* largest response accepted */

struct client {
    CURL *h;                     /* the one easy handle: connection reuse */
    char base[512];              /* base URL without trailing slash */
    char auth[600];              /* "Authorization: Bearer ..." */
    double deadline_s;           /* retry budget per request */
    volatile sig_atomic_t *stop; /* give up when non-zero */
    uint8_t *buf;                /* response body */
    size_t len, cap;             /* body length and capacity */
    int overflow;                /* body exceeded CLIENT_MAX_BODY */
    client_resp *cur;            /* response being filled (headers) */
    rng_t rng;                   /* backoff jitter */
    client_stats stats;
    char errbuf[CURL_ERROR_SIZE]; /* libcurl's message */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
    client_t *c = ud;
    size_t add = sz * n;
    if (c->len + add + 1 > CLIENT_MAX_BODY) {
        c->overflow = 1;
        return 0;
    }
    if (c->len + add + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + add + 1) cap *= 2;
        uint8_t *nb = realloc(c->buf, cap);
        if (!nb) return 0;
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, p, add);
    c->len += add;
    c->buf[c->len] = 0;
    return add;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
    client_t *c = ud;
    size_t len = sz * n;
    client_resp *r = c->cur;
    if (len > 5 && strncasecmp(p, "ETag:", 5) == 0) {
        const char *s = p + 5;
        const char *e = p + len;
        while (s < e && (*s == ' ' || *s == '"' || *s == 'W' || *s == '/')) s++;
        size_t k = 0;
        while (s < e && *s != '"' && *s != '\r' && *s != '\n' && k + 1 < sizeof r->etag)
            r->etag[k++] = *s++;
        r->etag[k] = 0;
    } else if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
        char tmp[32];
        size_t k = len - 12 < sizeof tmp - 1 ? len - 12 : sizeof tmp - 1;
        memcpy(tmp, p + 12, k);
        tmp[k] = 0;
        char *end;
        long v = strtol(tmp, &end, 10);
        if (end != tmp && v >= 0) r->retry_after = v;
    }
    return len;
}

hd_rc client_new(const char *base_url, const char *token, double retry_deadline_s,
                 volatile sig_atomic_t *stop, client_t **out, hd_err *err) {
    if (!base_url ||
        (strncmp(base_url, "http://", 7) != 0 && strncmp(base_url, "https://", 8) != 0))
        return hd_err_set(err, HD_EINVAL, "--server: '%s' is not an http:// or https:// URL",
                          base_url ? base_url : "");
    size_t bl = strlen(base_url);
    while (bl > 0 && base_url[bl - 1] == '/') bl--;
    if (bl >= sizeof((client_t *)0)->base)
        return hd_err_set(err, HD_EINVAL, "--server: URL too long");
    if (!token || !*token || strlen(token) > 512 || strpbrk(token, "\r\n "))
        return hd_err_set(err, HD_EINVAL, "--token: missing or malformed");
    client_t *c = calloc(1, sizeof *c);
    if (!c) return hd_err_set(err, HD_ENOMEM, "client: out of memory");
    memcpy(c->base, base_url, bl);
    c->base[bl] = 0;
    snprintf(c->auth, sizeof c->auth, "Authorization: Bearer %s", token);
    c->deadline_s = retry_deadline_s;
    c->stop = stop;
    rng_seed(&c->rng, (uint64_t)time(NULL), (uint64_t)(uintptr_t)c, 0, 0);
    c->cap = 4096;
    c->buf = malloc(c->cap);
    c->h = curl_easy_init();
    if (!c->h || !c->buf) {
        if (c->h) curl_easy_cleanup(c->h);
        free(c->buf);
        free(c);
        return hd_err_set(err, HD_ENOMEM, "client: curl_easy_init failed");
    }
    *out = c;
    return HD_OK;
}

void client_free(client_t *c) {
    if (!c) return;
    if (c->h) curl_easy_cleanup(c->h);
    free(c->buf);
    free(c);
}

const client_stats *client_get_stats(const client_t *c) { return &c->stats; }

const char *client_error_text(const client_resp *r) {
    static const char none[] = "(no body)";
    if (!r->body || !r->len) return none;
    const char *m = strstr((const char *)r->body, "\"message\"");
    return m ? m : (const char *)r->body;
}

/* One attempt. Returns the curl code; fills resp. */
static CURLcode attempt(client_t *c, const char *method, const char *url, const char *ctype,
                        const void *body, size_t len, const char *inm, double timeout_s,
                        client_resp *resp) {
    CURL *h = c->h;
    curl_easy_reset(h);
    c->len = 0;
    c->overflow = 0;
    memset(resp, 0, sizeof *resp);
    resp->retry_after = -1;
    c->cur = resp;
    struct curl_slist *hdr = NULL;
    char ct[128], inmh[128];
    hdr = curl_slist_append(hdr, c->auth);
    hdr = curl_slist_append(hdr, "Expect:");
    if (ctype) {
        snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
        hdr = curl_slist_append(hdr, ct);
    }
    if (inm) {
        snprintf(inmh, sizeof inmh, "If-None-Match: \"%s\"", inm);
        hdr = curl_slist_append(hdr, inmh);
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(timeout_s * 1000.0));
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
        if (strcmp(method, "POST") != 0) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    c->errbuf[0] = 0;
    CURLcode cc = curl_easy_perform(h);
    curl_slist_free_all(hdr);
    c->stats.requests++;
    c->stats.bytes_sent += body ? len : 0;
    if (cc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
        c->buf[c->len] = 0;
        resp->body = c->buf;
        resp->len = c->len;
        c->stats.bytes_recv += c->len;
    }
    c->cur = NULL;
    return cc;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    nanosleep(&ts, NULL);
}

hd_rc client_request(client_t *c, const char *method, const char *path, const char *ctype,
                     const void *body, size_t len, const char *if_none_match, double timeout_s,
                     client_resp *resp, hd_err *err) {
    char url[1024];
    if (snprintf(url, sizeof url, "%s%s", c->base, path) >= (int)sizeof url)
        return hd_err_set(err, HD_EINVAL, "request path too long");
    double start = now_s(), backoff = 0.1;
    for (int tries = 1;; tries++) {
        CURLcode cc = attempt(c, method, url, ctype, body, len, if_none_match, timeout_s, resp);
        char why[300];
        if (cc == CURLE_OK && resp->status < 500) return HD_OK;
        if (cc == CURLE_WRITE_ERROR && c->overflow)
            return hd_err_set(err, HD_ETOOBIG, "%s %s: response larger than %u bytes", method, path,
                              CLIENT_MAX_BODY);
        if (cc != CURLE_OK)
            snprintf(why, sizeof why, "%s", c->errbuf[0] ? c->errbuf : curl_easy_strerror(cc));
        else
            snprintf(why, sizeof why, "HTTP %ld", resp->status);
        double elapsed = now_s() - start;
        if (c->stop && *c->stop) {
            HD_LOG_WARN("request given up method=%s path=%s reason=\"stopping\" last=\"%s\"",
                        method, path, why);
            return hd_err_set(err, HD_ETIMEOUT, "%s %s: stopped", method, path);
        }
        if (elapsed + backoff > c->deadline_s) {
            HD_LOG_ERROR(
                "request given up method=%s path=%s attempts=%d elapsed_s=%.1f reason=\"%s\"",
                method, path, tries, elapsed, why);
            return hd_err_set(err, HD_ENET, "%s %s: %s (gave up after %d attempts, %.0f s)", method,
                              path, why, tries, elapsed);
        }
        /* Full jitter: sleep uniformly in [backoff/2, backoff], doubling to 5 s. */
        double sl = backoff * (0.5 + 0.5 * rng_uniform(&c->rng));
        if (cc == CURLE_OK && resp->retry_after > 0 && resp->retry_after < 60)
            sl = (double)resp->retry_after;
        HD_LOG_WARN("request retry method=%s path=%s attempt=%d reason=\"%s\" sleep_s=%.2f", method,
                    path, tries, why, sl);
        c->stats.retries++;
        sleep_s(sl);
        backoff = fmin(backoff * 2.0, 5.0);
    }
}
