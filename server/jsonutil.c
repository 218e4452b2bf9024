/* Strict JSON field access (jsonutil.h). */
#include "jsonutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

hd_rc jsonutil_parse_object(const char *text, size_t len, cJSON **out, hd_err *err) {
    if (!text || len == 0) return hd_err_set(err, HD_EFORMAT, "empty body: expected a JSON object");
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!j) {
        size_t off = end && end >= text ? (size_t)(end - text) : 0;
        return hd_err_set(err, HD_EFORMAT, "malformed JSON near byte %zu", off);
    }
    /* Only whitespace may follow the object. */
    for (const char *p = end; p && p < text + len; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            cJSON_Delete(j);
            return hd_err_set(err, HD_EFORMAT, "trailing data after the JSON value at byte %zu",
                              (size_t)(p - text));
        }
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return hd_err_set(err, HD_EFORMAT, "expected a JSON object");
    }
    *out = j;
    return HD_OK;
}

hd_rc jsonutil_check_keys(const cJSON *obj, const char *const *allowed, hd_err *err) {
    for (const cJSON *it = obj->child; it; it = it->next) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (it->string && strcmp(it->string, *a) == 0) ok = 1;
        if (!ok)
            return hd_err_set(err, HD_EINVAL, "unknown field '%.64s'",
                              it->string ? it->string : "");
        for (const cJSON *o = it->next; o; o = o->next)
            if (o->string && strcmp(o->string, it->string) == 0)
                return hd_err_set(err, HD_EINVAL, "field '%.64s' given twice", it->string);
    }
    return HD_OK;
}

hd_rc jsonutil_int(const cJSON *obj, const char *name, int required, int64_t def, int64_t lo,
                   int64_t hi, int64_t *out, hd_err *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it) {
        if (required) return hd_err_set(err, HD_EINVAL, "%s: required", name);
        *out = def;
        return HD_OK;
    }
    if (!cJSON_IsNumber(it)) return hd_err_set(err, HD_EINVAL, "%s: must be an integer", name);
    double d = it->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return hd_err_set(err, HD_EINVAL, "%s: must be an integer", name);
    if (d < (double)lo || d > (double)hi)
        return hd_err_set(err, HD_EINVAL, "%s: must be in [%lld, %lld]", name, (long long)lo,
                          (long long)hi);
    *out = (int64_t)d;
    return HD_OK;
}

hd_rc jsonutil_num(const cJSON *obj, const char *name, int required, double def, double *out,
                   hd_err *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it) {
        if (required) return hd_err_set(err, HD_EINVAL, "%s: required", name);
        *out = def;
        return HD_OK;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return hd_err_set(err, HD_EINVAL, "%s: must be a finite number", name);
    *out = it->valuedouble;
    return HD_OK;
}

hd_rc jsonutil_str(const cJSON *obj, const char *name, int required, size_t maxlen,
                   const char **out, hd_err *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it) {
        if (required) return hd_err_set(err, HD_EINVAL, "%s: required", name);
        *out = NULL;
        return HD_OK;
    }
    if (!cJSON_IsString(it) || !it->valuestring)
        return hd_err_set(err, HD_EINVAL, "%s: must be a string", name);
    size_t n = strlen(it->valuestring);
    if (n > maxlen)
        return hd_err_set(err, HD_EINVAL, "%s: longer than %zu characters", name, maxlen);
    for (const char *p = it->valuestring; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            return hd_err_set(err, HD_EINVAL, "%s: only printable ASCII is allowed", name);
    *out = it->valuestring;
    return HD_OK;
}

hd_rc jsonutil_num_array(const cJSON *obj, const char *name, size_t maxn, double **out, size_t *n,
                         hd_err *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!it) return hd_err_set(err, HD_EINVAL, "%s: required", name);
    if (!cJSON_IsArray(it))
        return hd_err_set(err, HD_EINVAL, "%s: must be an array of numbers", name);
    size_t cnt = (size_t)cJSON_GetArraySize(it);
    if (cnt > maxn) return hd_err_set(err, HD_EINVAL, "%s: more than %zu numbers", name, maxn);
    double *x = NULL;
    if (cnt) {
        x = malloc(cnt * sizeof *x);
        if (!x) return hd_err_set(err, HD_ENOMEM, "%s: out of memory", name);
    }
    size_t i = 0;
    for (const cJSON *e = it->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble)) {
            free(x);
            return hd_err_set(err, HD_EINVAL, "%s[%zu]: must be a finite number", name, i);
        }
        x[i] = e->valuedouble;
    }
    *out = x;
    *n = cnt;
    return HD_OK;
}

int jsonutil_add_num_array(cJSON *obj, const char *name, const double *x, size_t n) {
    cJSON *a = cJSON_AddArrayToObject(obj, name);
    if (!a) return -1;
    for (size_t i = 0; i < n; i++) {
        cJSON *v = isfinite(x[i]) ? cJSON_CreateNumber(x[i]) : cJSON_CreateNull();
        if (!v) return -1;
        cJSON_AddItemToArray(a, v);
    }
    return 0;
}

char *jsonutil_print_free(cJSON *root) {
    if (!root) return NULL;
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}
