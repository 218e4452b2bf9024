/* Plain-text run status (textstatus.h). */
#include "textstatus.h"

#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS_OUT_MAX (8u << 20) /* largest text answer */
#define TS_LABEL "  %-17s"    /* label column */

typedef struct {
    char *p;
    size_t len, cap;
    int bad;
} tbuf;

static void put(tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(tbuf *b, const char *fmt, ...) {
    if (b->bad) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->bad = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap * 2;
        char *np = nc <= TS_OUT_MAX ? realloc(b->p, nc) : NULL;
        if (!np) {
            b->bad = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
}

static char *finish(tbuf *b, size_t *len) {
    if (b->bad) {
        free(b->p);
        return NULL;
    }
    *len = b->len;
    return b->p;
}

static double num(const cJSON *o, const char *k, double def) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) ? x->valuedouble : def;
}

static const char *str(const cJSON *o, const char *k, const char *def) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(x) && x->valuestring ? x->valuestring : def;
}

/* A loss as text: "-" when missing. */
static void fmt_num(char *out, size_t cap, const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsNumber(x) && isfinite(x->valuedouble))
        snprintf(out, cap, "%.6g", x->valuedouble);
    else
        snprintf(out, cap, "-");
}

int textstatus_sparkline(const double *v, int n, int width, char *out, size_t cap) {
    if (cap) out[0] = 0;
    if (width < 1 || cap < 4) return 0;
    double pts[TEXTSTATUS_SPARK_MAX];
    if (width > TEXTSTATUS_SPARK_MAX) width = TEXTSTATUS_SPARK_MAX;
    int finite = 0;
    for (int i = 0; i < n; i++) finite += isfinite(v[i]) != 0;
    int np = finite < width ? finite : width;
    if (np == 0) return 0;
    /* Group the finite values into np consecutive groups of near-equal size. */
    int k = 0, g = 0;
    double sum = 0;
    int cnt = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(v[i])) continue;
        sum += v[i];
        cnt++;
        k++;
        if ((long)k * np >= (long)(g + 1) * finite) {
            pts[g++] = sum / cnt;
            sum = 0;
            cnt = 0;
        }
    }
    double lo = pts[0], hi = pts[0];
    for (int i = 1; i < g; i++) {
        if (pts[i] < lo) lo = pts[i];
        if (pts[i] > hi) hi = pts[i];
    }
    int w = 0;
    size_t pos = 0;
    for (int i = 0; i < g && pos + 4 <= cap; i++) {
        int lvl = hi > lo ? (int)((pts[i] - lo) / (hi - lo) * 7.0 + 0.5) : 3;
        if (lvl < 0) lvl = 0;
        if (lvl > 7) lvl = 7;
        out[pos++] = (char)0xe2;
        out[pos++] = (char)0x96;
        out[pos++] = (char)(0x81 + lvl);
        w++;
    }
    out[pos] = 0;
    return w;
}

/* Loss series of a metrics array: val_loss where any episode has one,
 * else train_loss. Returns the count (v owned by the caller) and names the
 * series in *what. */
static int series(const cJSON *metrics, double **v, const char **what) {
    int n = cJSON_GetArraySize(metrics), has_val = 0;
    *v = malloc((size_t)(n > 0 ? n : 1) * sizeof **v);
    if (!*v) return 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, metrics) has_val |=
        cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(m, "val_loss"));
    *what = has_val ? "val loss" : "train loss";
    int k = 0;
    cJSON_ArrayForEach(m, metrics) {
        double x = num(m, has_val ? "val_loss" : "train_loss", (double)NAN);
        if (isfinite(x)) (*v)[k++] = x;
    }
    return k;
}

static cJSON *metrics_of(engine_t *e, engine_run *r) {
    char *mj = engine_metrics_json(e, r);
    cJSON *m = mj ? cJSON_Parse(mj) : NULL;
    free(mj);
    return m;
}

static void age(char *out, size_t cap, double s) {
    if (!isfinite(s) || s < 0)
        snprintf(out, cap, "-");
    else if (s < 120)
        snprintf(out, cap, "%.1f s ago", s);
    else if (s < 7200)
        snprintf(out, cap, "%.0f min ago", s / 60);
    else
        snprintf(out, cap, "%.1f h ago", s / 3600);
}

char *textstatus_run(engine_t *e, engine_run *r, size_t *len) {
    tbuf b = {malloc(4096), 0, 4096, 0};
    if (!b.p) return NULL;
    char *rj = engine_run_json(e, r);
    cJSON *run = rj ? cJSON_Parse(rj) : NULL;
    free(rj);
    cJSON *met = metrics_of(e, r);
    if (!run || !met) {
        cJSON_Delete(run);
        cJSON_Delete(met);
        free(b.p);
        return NULL;
    }
    char a[64], c[64];
    put(&b, "run %.0f  %s  phase %s  %s (%s)\n", num(run, "id", 0), str(run, "state", "?"),
        str(run, "phase", "?"), str(run, "method", "?"), str(run, "mode", "?"));
    const char *error = str(run, "error", NULL);
    if (error) put(&b, TS_LABEL "%s\n", "error", error);
    put(&b, TS_LABEL "%.0f / %.0f\n", "episode", num(run, "episode", 0), num(run, "episodes", 0));
    double step = num(run, "step", 0);
    if (step > 0)
        put(&b, TS_LABEL "%.0f / %.0f\n", "step", step, num(run, "steps", 0));
    else
        put(&b, TS_LABEL "- / %.0f\n", "step", num(run, "steps", 0));
    put(&b, TS_LABEL "%.0f  (outer steps %.0f, phi version %.0f)\n", "lam version",
        num(run, "lam_version", 0), num(run, "outer_steps", 0), num(run, "phi_version", 0));
    put(&b, TS_LABEL "%.6g\n", "theta", num(run, "theta", 0));
    const cJSON *last = cJSON_GetObjectItemCaseSensitive(run, "last_metrics");
    if (cJSON_IsObject(last)) {
        fmt_num(a, sizeof a, last, "train_loss");
        put(&b, TS_LABEL "%-12s (episode %.0f)\n", "train loss", a, num(last, "episode", 0));
    } else {
        put(&b, TS_LABEL "-\n", "train loss");
    }
    /* The newest episode with a validation loss. */
    const cJSON *lv = NULL, *m;
    cJSON_ArrayForEach(m, met) if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(m, "val_loss")))
        lv = m;
    if (lv) {
        fmt_num(a, sizeof a, lv, "val_loss");
        put(&b, TS_LABEL "%-12s (episode %.0f)\n", "val loss", a, num(lv, "episode", 0));
    } else {
        put(&b, TS_LABEL "-\n", "val loss");
    }
    if (strcmp(str(run, "state", ""), "completed") == 0 ||
        cJSON_GetObjectItemCaseSensitive(run, "meta_test_loss")) {
        fmt_num(a, sizeof a, run, "meta_test_loss");
        put(&b, TS_LABEL "%s\n", "meta-test loss", a);
    }
    double *v = NULL;
    const char *what = "val loss";
    int nv = series(met, &v, &what);
    char spark[3 * TEXTSTATUS_SPARK_MAX + 4];
    int w = textstatus_sparkline(v, nv, TEXTSTATUS_SPARK_MAX, spark, sizeof spark);
    if (w > 0) {
        double lo = v[0], hi = v[0];
        for (int i = 1; i < nv; i++) {
            lo = v[i] < lo ? v[i] : lo;
            hi = v[i] > hi ? v[i] : hi;
        }
        snprintf(a, sizeof a, "%s trend", what);
        put(&b, TS_LABEL "%s  %d episode%s, min %.4g, max %.4g\n", a, spark, nv, nv == 1 ? "" : "s",
            lo, hi);
    } else {
        put(&b, TS_LABEL "(no finished episode yet)\n", "loss trend");
    }
    free(v);
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(run, "workers");
    put(&b, TS_LABEL "%d\n", "workers", cJSON_GetArraySize(ws));
    if (cJSON_GetArraySize(ws) > 0) {
        put(&b, "    %-32s  %-20s  %-6s  %s\n", "WORKER", "NAME", "SHARD", "LAST HEARTBEAT");
        cJSON_ArrayForEach(m, ws) {
            snprintf(c, sizeof c, "%.0f/%.0f", num(m, "shard", 0), num(m, "shards", 1));
            age(a, sizeof a, num(m, "last_seen_seconds_ago", (double)NAN));
            put(&b, "    %-32s  %-20.20s  %-6s  %s\n", str(m, "worker_id", "?"), str(m, "name", ""),
                c, a);
        }
    }
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(run, "leases");
    put(&b, TS_LABEL "%d active\n", "leases", cJSON_GetArraySize(ls));
    if (cJSON_GetArraySize(ls) > 0) {
        put(&b, "    %-32s  %-8s  %-7s  %-12s  %-5s  %s\n", "LEASE", "KIND", "EPISODE", "SLOTS",
            "LAM", "EXPIRES IN");
        cJSON_ArrayForEach(m, ls) {
            char slots[64];
            size_t sp = 0;
            const cJSON *s;
            slots[0] = 0;
            cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(m, "slots")) {
                int k = snprintf(slots + sp, sizeof slots - sp, "%s%.0f", sp ? "," : "",
                                 s->valuedouble);
                if (k < 0 || (size_t)k >= sizeof slots - sp) break;
                sp += (size_t)k;
            }
            put(&b, "    %-32s  %-8s  %-7.0f  %-12.12s  %-5.0f  %.1f s\n", str(m, "lease_id", "?"),
                str(m, "kind", "?"), num(m, "episode", 0), slots[0] ? slots : "-",
                num(m, "lam_version", 0), num(m, "expires_in", 0));
        }
    }
    cJSON_Delete(run);
    cJSON_Delete(met);
    return finish(&b, len);
}

char *textstatus_runs(engine_t *e, size_t *len) {
    tbuf b = {malloc(4096), 0, 4096, 0};
    if (!b.p) return NULL;
    char *rj = engine_runs_json(e);
    cJSON *root = rj ? cJSON_Parse(rj) : NULL;
    free(rj);
    if (!root) {
        free(b.p);
        return NULL;
    }
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(root, "runs"), *x;
    put(&b, "%-5s %-10s %-9s %-9s %-7s %-6s %-10s %-10s %-10s %s\n", "ID", "STATE", "PHASE",
        "EPISODE", "STEP", "LAM", "THETA", "VAL LOSS", "META-TEST", "LOSS TREND");
    cJSON_ArrayForEach(x, runs) {
        engine_run *r = engine_run_find(e, (int64_t)num(x, "id", 0));
        cJSON *met = r ? metrics_of(e, r) : NULL;
        char ep[32], st[32], val[32], test[32], th[32], spark[3 * 24 + 4];
        snprintf(ep, sizeof ep, "%.0f/%.0f", num(x, "episode", 0), num(x, "episodes", 0));
        if (num(x, "step", 0) > 0)
            snprintf(st, sizeof st, "%.0f/%.0f", num(x, "step", 0), num(x, "steps", 0));
        else
            snprintf(st, sizeof st, "-");
        snprintf(th, sizeof th, "%.4g", num(x, "theta", 0));
        fmt_num(val, sizeof val, x, "meta_val_loss");
        fmt_num(test, sizeof test, x, "meta_test_loss");
        spark[0] = 0;
        if (met) {
            double *v = NULL;
            const char *what;
            int nv = series(met, &v, &what);
            textstatus_sparkline(v, nv, 24, spark, sizeof spark);
            free(v);
        }
        put(&b, "%-5.0f %-10s %-9s %-9s %-7s %-6.0f %-10s %-10s %-10s %s\n", num(x, "id", 0),
            str(x, "state", "?"), str(x, "phase", "?"), ep, st, num(x, "lam_version", 0), th, val,
            test, spark);
        cJSON_Delete(met);
    }
    if (cJSON_GetArraySize(runs) == 0) put(&b, "(no runs)\n");
    cJSON_Delete(root);
    return finish(&b, len);
}
