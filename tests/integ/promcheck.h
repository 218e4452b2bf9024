/* A strict checker of the Prometheus text exposition format 0.0.4 for the
 * tests (header-only): every sample belongs to a family announced by one
 * # HELP and one # TYPE line before its first sample; metric and label
 * names match [a-zA-Z_:][a-zA-Z0-9_:]* / [a-zA-Z_][a-zA-Z0-9_]*; label
 * values are quoted with only \\, \" and \n escapes; values parse as
 * numbers (or +Inf, -Inf, NaN); no duplicate series; counters end in
 * _total; histograms have increasing le bounds, cumulative (non-decreasing)
 * buckets, a +Inf bucket equal to _count, and a _sum, per label set. */
#ifndef HD_TESTS_PROMCHECK_H
#define HD_TESTS_PROMCHECK_H

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PC_MAX_FAM 128
#define PC_MAX_SERIES 4096
#define PC_LINE 1024

typedef struct {
    char name[160];
    char type[16];
    int help, typed, samples;
} pc_family;

typedef struct {
    char key[PC_LINE]; /* name{labels} as written, for duplicate checks */
} pc_series;

typedef struct {
    char base[PC_LINE]; /* family + labels without le */
    double last_le, last_count, inf_count, count;
    int has_inf, has_count, has_sum, nb;
} pc_histo;

typedef struct {
    pc_family fam[PC_MAX_FAM];
    int nfam;
    pc_series *series;
    int nseries;
    pc_histo hist[256];
    int nhist;
    char err[512];
} pc_state;

static inline int pc_fail(pc_state *st, int line, const char *msg, const char *text) {
    snprintf(st->err, sizeof st->err, "line %d: %s: %.200s", line, msg, text);
    return -1;
}

static inline int pc_name_ok(const char *s, size_t n, int colon) {
    if (n == 0) return 0;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_' || (colon && s[0] == ':'))) return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || (colon && s[i] == ':'))) return 0;
    return 1;
}

static inline pc_family *pc_fam(pc_state *st, const char *name, size_t n) {
    for (int i = 0; i < st->nfam; i++)
        if (strlen(st->fam[i].name) == n && strncmp(st->fam[i].name, name, n) == 0)
            return &st->fam[i];
    return NULL;
}

static inline pc_histo *pc_hist(pc_state *st, const char *base) {
    for (int i = 0; i < st->nhist; i++)
        if (strcmp(st->hist[i].base, base) == 0) return &st->hist[i];
    if (st->nhist == 256) return NULL;
    pc_histo *h = &st->hist[st->nhist++];
    memset(h, 0, sizeof *h);
    snprintf(h->base, sizeof h->base, "%s", base);
    h->last_le = -INFINITY;
    return h;
}

static inline int pc_value(const char *s, double *v) {
    if (strcmp(s, "+Inf") == 0)
        *v = INFINITY;
    else if (strcmp(s, "-Inf") == 0)
        *v = -INFINITY;
    else if (strcmp(s, "NaN") == 0)
        *v = NAN;
    else {
        char *end;
        *v = strtod(s, &end);
        if (end == s || *end) return -1;
    }
    return 0;
}

/* Check text; returns 0, or -1 with st->err set. */
static inline int pc_check(const char *text, pc_state *st) {
    memset(st, 0, sizeof *st);
    st->series = calloc(PC_MAX_SERIES, sizeof *st->series);
    if (!st->series) return pc_fail(st, 0, "out of memory", "");
    int rc = 0, ln = 0;
    const char *p = text;
    if (!*p) rc = pc_fail(st, 0, "empty exposition", "");
    while (rc == 0 && *p) {
        const char *nl = strchr(p, '\n');
        if (!nl) {
            rc = pc_fail(st, ln + 1, "last line without a newline", p);
            break;
        }
        char line[PC_LINE];
        size_t n = (size_t)(nl - p);
        ln++;
        if (n >= sizeof line) {
            rc = pc_fail(st, ln, "line too long", p);
            break;
        }
        memcpy(line, p, n);
        line[n] = 0;
        p = nl + 1;
        if (n == 0) continue;
        if (line[0] == '#') {
            char kw[8], name[160], rest[PC_LINE];
            rest[0] = 0;
            if (sscanf(line, "# %7s %159s %1000[^\n]", kw, name, rest) < 2) {
                if (strncmp(line, "# HELP", 6) == 0 || strncmp(line, "# TYPE", 6) == 0)
                    rc = pc_fail(st, ln, "bad HELP/TYPE", line);
                continue; /* a plain comment */
            }
            if (strcmp(kw, "HELP") != 0 && strcmp(kw, "TYPE") != 0) continue;
            if (!pc_name_ok(name, strlen(name), 1)) {
                rc = pc_fail(st, ln, "bad metric name", line);
                break;
            }
            pc_family *f = pc_fam(st, name, strlen(name));
            if (!f) {
                if (st->nfam == PC_MAX_FAM) {
                    rc = pc_fail(st, ln, "too many families", line);
                    break;
                }
                f = &st->fam[st->nfam++];
                snprintf(f->name, sizeof f->name, "%s", name);
            }
            if (f->samples) {
                rc = pc_fail(st, ln, "HELP/TYPE after the family's samples", line);
                break;
            }
            if (strcmp(kw, "HELP") == 0) {
                if (f->help++) rc = pc_fail(st, ln, "second HELP", line);
            } else {
                if (f->typed++) rc = pc_fail(st, ln, "second TYPE", line);
                if (strcmp(rest, "counter") && strcmp(rest, "gauge") && strcmp(rest, "histogram") &&
                    strcmp(rest, "summary") && strcmp(rest, "untyped"))
                    rc = pc_fail(st, ln, "unknown type", line);
                snprintf(f->type, sizeof f->type, "%s", rest);
                if (strcmp(rest, "counter") == 0 &&
                    (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total")))
                    rc = pc_fail(st, ln, "counter name without _total", line);
            }
            continue;
        }
        /* sample: name[{labels}] value */
        size_t nm = 0;
        while (line[nm] && line[nm] != '{' && line[nm] != ' ') nm++;
        if (!pc_name_ok(line, nm, 1)) {
            rc = pc_fail(st, ln, "bad sample name", line);
            break;
        }
        char base[PC_LINE], le[64];
        le[0] = 0;
        size_t bl = 0;
        memcpy(base, line, nm);
        bl = nm;
        size_t i = nm;
        if (line[i] == '{') {
            base[bl++] = '{';
            i++;
            int first = 1;
            while (line[i] != '}') {
                if (!first) {
                    if (line[i] != ',') {
                        rc = pc_fail(st, ln, "expected ',' between labels", line);
                        break;
                    }
                    i++;
                }
                first = 0;
                size_t ls = i;
                while (line[i] && line[i] != '=') i++;
                if (!pc_name_ok(line + ls, i - ls, 0) || line[i] != '=' || line[i + 1] != '"') {
                    rc = pc_fail(st, ln, "bad label name or missing '=\"'", line);
                    break;
                }
                int is_le = i - ls == 2 && strncmp(line + ls, "le", 2) == 0;
                i += 2;
                size_t vs = i;
                while (line[i] && line[i] != '"') {
                    if (line[i] == '\\') {
                        if (line[i + 1] != '\\' && line[i + 1] != '"' && line[i + 1] != 'n') {
                            rc = pc_fail(st, ln, "bad escape in label value", line);
                            break;
                        }
                        i++;
                    }
                    i++;
                }
                if (rc) break;
                if (line[i] != '"') {
                    rc = pc_fail(st, ln, "unterminated label value", line);
                    break;
                }
                if (is_le) {
                    size_t vl = i - vs < sizeof le - 1 ? i - vs : sizeof le - 1;
                    memcpy(le, line + vs, vl);
                    le[vl] = 0;
                } else {
                    if (bl > 1 && base[bl - 1] != '{') base[bl++] = ',';
                    memcpy(base + bl, line + ls, i + 1 - ls);
                    bl += i + 1 - ls;
                }
                i++;
            }
            if (rc) break;
            base[bl++] = '}';
            if (base[bl - 2] == '{') bl -= 2; /* only le: no label set */
            i++;
        }
        base[bl] = 0;
        if (line[i] != ' ') {
            rc = pc_fail(st, ln, "expected one space before the value", line);
            break;
        }
        double v;
        char vtxt[64];
        if (sscanf(line + i + 1, "%63s", vtxt) != 1 || pc_value(vtxt, &v) != 0) {
            rc = pc_fail(st, ln, "bad value", line);
            break;
        }
        /* duplicate series */
        for (int k = 0; k < st->nseries; k++)
            if (strlen(st->series[k].key) == i && strncmp(st->series[k].key, line, i) == 0)
                rc = pc_fail(st, ln, "duplicate series", line);
        if (st->nseries < PC_MAX_SERIES) {
            size_t kl = i < PC_LINE - 1 ? i : PC_LINE - 1;
            memcpy(st->series[st->nseries].key, line, kl);
            st->series[st->nseries].key[kl] = 0;
            st->nseries++;
        }
        /* family: exact name, or a histogram's _bucket/_sum/_count */
        pc_family *f = pc_fam(st, line, nm);
        const char *suffix = NULL;
        if (!f) {
            static const char *const sfx[] = {"_bucket", "_sum", "_count"};
            for (int k = 0; k < 3 && !f; k++) {
                size_t sl = strlen(sfx[k]);
                if (nm > sl && strncmp(line + nm - sl, sfx[k], sl) == 0) {
                    f = pc_fam(st, line, nm - sl);
                    if (f) suffix = sfx[k];
                }
            }
        }
        if (!f || !f->help || !f->typed) {
            rc = pc_fail(st, ln, "sample without a HELP and TYPE before it", line);
            break;
        }
        f->samples++;
        if (strcmp(f->type, "histogram") == 0) {
            if (!suffix) {
                rc = pc_fail(st, ln, "histogram sample without _bucket/_sum/_count", line);
                break;
            }
            char hb[PC_LINE];
            snprintf(hb, sizeof hb, "%s%s", f->name, base + nm);
            pc_histo *h = pc_hist(st, hb);
            if (!h) {
                rc = pc_fail(st, ln, "too many histograms", line);
                break;
            }
            if (strcmp(suffix, "_bucket") == 0) {
                double lev;
                if (!le[0] || pc_value(le, &lev) != 0) {
                    rc = pc_fail(st, ln, "bucket without a numeric le", line);
                    break;
                }
                if (h->has_inf || lev <= h->last_le)
                    rc = pc_fail(st, ln, "le bounds not increasing", line);
                if (h->nb && v < h->last_count)
                    rc = pc_fail(st, ln, "bucket counts not cumulative", line);
                h->last_le = lev;
                h->last_count = v;
                h->nb++;
                if (isinf(lev)) {
                    h->has_inf = 1;
                    h->inf_count = v;
                }
            } else if (strcmp(suffix, "_count") == 0) {
                h->has_count = 1;
                h->count = v;
            } else {
                h->has_sum = 1;
            }
        } else if (le[0]) {
            rc = pc_fail(st, ln, "le label outside a histogram", line);
        }
        if (strcmp(f->type, "counter") == 0 && (v < 0 || isnan(v)))
            rc = pc_fail(st, ln, "negative counter", line);
    }
    for (int k = 0; rc == 0 && k < st->nhist; k++) {
        const pc_histo *h = &st->hist[k];
        if (!h->has_inf || !h->has_count || !h->has_sum)
            rc = pc_fail(st, 0, "histogram without +Inf bucket, _count or _sum", h->base);
        else if (h->inf_count != h->count)
            rc = pc_fail(st, 0, "+Inf bucket differs from _count", h->base);
    }
    free(st->series);
    st->series = NULL;
    return rc;
}

#endif
