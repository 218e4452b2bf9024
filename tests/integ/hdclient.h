/* Test-side helpers for the server tests (header-only; integ, fault, fuzz
 * and bench include it): start and kill a real hdserver on 127.0.0.1 with a
 * free port (--listen 127.0.0.1:0 --port-file) and a temp dir, and a small
 * libcurl client (keep-alive, one handle per hdc_conn). */
#ifndef HD_TESTS_HDCLIENT_H
#define HD_TESTS_HDCLIENT_H

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HDC_ADMIN "test-admin-token-0123456789"

typedef struct {
    pid_t pid;     /* server process, 0 when not running */
    unsigned port; /* bound port */
    char dir[256]; /* temp dir (db, port file, log) */
    char db[320];
    char base[64];     /* http://127.0.0.1:port */
    char extra[8][64]; /* extra arguments */
    int nextra;
} hdc_server;

typedef struct {
    CURL *h;
    struct curl_slist *hdrs;
} hdc_conn;

typedef struct {
    long status; /* HTTP status, 0 on transport failure */
    char *body;  /* NUL-terminated body (malloc'd) */
    size_t len;
    char etag[64];
    int curl_rc; /* CURLcode */
} hdc_resp;

static inline double hdc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void hdc_sleep(double s) {
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
}

static inline const char *hdc_build_dir(void) {
    const char *b = getenv("BUILD");
    return b && *b ? b : "build";
}

/* Make a temp dir for a test. */
static inline int hdc_tmpdir(hdc_server *s, const char *tag) {
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/hdtest-%s-XXXXXX", tag);
    if (!mkdtemp(s->dir)) return -1;
    snprintf(s->db, sizeof s->db, "%s/db.sqlite", s->dir);
    return 0;
}

/* Start hdserver on s->db; waits for the port file. Returns 0 or -1. */
static inline int hdc_start(hdc_server *s) {
    char portf[300], logf[300], bin[512];
    snprintf(portf, sizeof portf, "%s/port", s->dir);
    snprintf(logf, sizeof logf, "%s/server.log", s->dir);
    snprintf(bin, sizeof bin, "%s/hdserver", hdc_build_dir());
    unlink(portf);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        char *argv[32];
        int n = 0;
        argv[n++] = bin;
        argv[n++] = (char *)"--db";
        argv[n++] = s->db;
        argv[n++] = (char *)"--listen";
        argv[n++] = (char *)"127.0.0.1:0";
        argv[n++] = (char *)"--port-file";
        argv[n++] = portf;
        argv[n++] = (char *)"--admin-token";
        argv[n++] = (char *)HDC_ADMIN;
        argv[n++] = (char *)"--log-level";
        argv[n++] = (char *)(getenv("HD_TEST_LOG") ? getenv("HD_TEST_LOG") : "warn");
        for (int i = 0; i < s->nextra; i++) argv[n++] = s->extra[i];
        argv[n] = NULL;
        execv(bin, argv);
        _exit(127);
    }
    s->pid = pid;
    double t0 = hdc_now();
    while (hdc_now() - t0 < 20.0) {
        FILE *f = fopen(portf, "r");
        if (f) {
            unsigned p = 0;
            int ok = fscanf(f, "%u", &p) == 1;
            fclose(f);
            if (ok && p > 0) {
                s->port = p;
                snprintf(s->base, sizeof s->base, "http://127.0.0.1:%u", p);
                return 0;
            }
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            return -1;
        }
        hdc_sleep(0.01);
    }
    return -1;
}

/* Send sig and wait for the exit; returns the wait status or -1. */
static inline int hdc_stop(hdc_server *s, int sig) {
    if (!s->pid) return -1;
    kill(s->pid, sig);
    int st = 0;
    double t0 = hdc_now();
    for (;;) {
        pid_t w = waitpid(s->pid, &st, WNOHANG);
        if (w == s->pid) break;
        if (hdc_now() - t0 > 30.0) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            break;
        }
        hdc_sleep(0.005);
    }
    s->pid = 0;
    return st;
}

/* Remove the temp dir (keeps it when HD_TEST_KEEP is set). */
static inline void hdc_cleanup(hdc_server *s) {
    if (s->pid) hdc_stop(s, SIGKILL);
    if (getenv("HD_TEST_KEEP") || !s->dir[0]) return;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", s->dir);
}

static size_t hdc__write(char *p, size_t sz, size_t n, void *ud) {
    hdc_resp *r = ud;
    size_t add = sz * n;
    char *nb = realloc(r->body, r->len + add + 1);
    if (!nb) return 0;
    memcpy(nb + r->len, p, add);
    r->body = nb;
    r->len += add;
    r->body[r->len] = 0;
    return add;
}

static size_t hdc__header(char *p, size_t sz, size_t n, void *ud) {
    hdc_resp *r = ud;
    size_t len = sz * n;
    if (len > 6 && strncasecmp(p, "ETag:", 5) == 0) {
        const char *v = p + 5;
        while (*v == ' ') v++;
        size_t vl = len - (size_t)(v - p);
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n')) vl--;
        if (vl >= sizeof r->etag) vl = sizeof r->etag - 1;
        memcpy(r->etag, v, vl);
        r->etag[vl] = 0;
    }
    return len;
}

static inline void hdc_resp_free(hdc_resp *r) {
    free(r->body);
    memset(r, 0, sizeof *r);
}

static inline void hdc_conn_init(hdc_conn *c) {
    c->h = curl_easy_init();
    c->hdrs = NULL;
}

static inline void hdc_conn_clear(hdc_conn *c) {
    if (c->h) curl_easy_cleanup(c->h);
    c->h = NULL;
}

/* One request. extra_hdr may be NULL. Returns r->status (0 on transport
 * failure). raw_path: no path normalisation by libcurl. */
static inline long hdc_req(hdc_conn *c, const char *method, const char *url, const char *token,
                           const void *body, size_t len, const char *extra_hdr, hdc_resp *r) {
    memset(r, 0, sizeof *r);
    CURL *h = c->h;
    curl_easy_reset(h);
    struct curl_slist *hl = NULL;
    char auth[256];
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hl = curl_slist_append(hl, auth);
    }
    if (extra_hdr) hl = curl_slist_append(hl, extra_hdr);
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, hdc__write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, hdc__header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    } else {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (body) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)body);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        }
    }
    CURLcode cr = curl_easy_perform(h);
    r->curl_rc = (int)cr;
    if (cr == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    else
        r->status = 0;
    curl_slist_free_all(hl);
    if (!r->body) {
        r->body = calloc(1, 1);
        r->len = 0;
    }
    return r->status;
}

/* Integer value of "key": N in a JSON text (first occurrence), or def. */
static inline long long hdc_json_int(const char *json, const char *key, long long def) {
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = json ? strstr(json, pat) : NULL;
    if (!p) return def;
    p += strlen(pat);
    char *end;
    long long v = strtoll(p, &end, 10);
    return end == p ? def : v;
}

/* String value of "key":"..." into out, or "" . */
static inline void hdc_json_str(const char *json, const char *key, char *out, size_t cap) {
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = json ? strstr(json, pat) : NULL;
    out[0] = 0;
    if (!p) return;
    p += strlen(pat);
    size_t i = 0;
    while (p[i] && p[i] != '"' && i + 1 < cap) {
        out[i] = p[i];
        i++;
    }
    out[i] = 0;
}

/* Send raw bytes on a new connection to 127.0.0.1:port (then, if body2 is
 * not NULL, send body2 in pieces while the server accepts them) and read
 * the answer into out (NUL-terminated). Returns the HTTP status or 0. */
static inline int hdc_raw(unsigned port, const char *req, size_t len, const char *body2,
                          size_t len2, char *out, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return 0;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += (size_t)w;
    }
    for (off = 0; body2 && off < len2;) {
        ssize_t w = send(fd, body2 + off, len2 - off > 65536 ? 65536 : len2 - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += (size_t)w;
    }
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t n = recv(fd, out + got, cap - 1 - got, 0);
        if (n <= 0) break;
        got += (size_t)n;
        out[got] = 0;
        char *hdr_end = strstr(out, "\r\n\r\n");
        if (hdr_end) {
            const char *cl = strstr(out, "Content-Length: ");
            if (!cl) cl = strstr(out, "content-length: ");
            if (cl && got >= (size_t)(hdr_end + 4 - out) + (size_t)strtoul(cl + 16, NULL, 10))
                break;
        }
    }
    out[got] = 0;
    close(fd);
    int st = 0;
    if (sscanf(out, "HTTP/1.%*d %d", &st) != 1) st = 0;
    return st;
}

#endif
