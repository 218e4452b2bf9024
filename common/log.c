/* The log sink: one of the two process-wide mutable globals (STYLE C9). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *log_program = "hd";
static volatile int log_level = HD_LOG_LVL_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void hd_log_init(const char *program, hd_log_level level) {
    if (program) log_program = program;
    log_level = (int)level;
}

int hd_log_level_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, level_names[i]) == 0) return i;
    return -1;
}

hd_log_level hd_log_level_get(void) { return (hd_log_level)log_level; }

void hd_log_write(hd_log_level lvl, const char *fmt, ...) {
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(
        line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ pid=%ld prog=%s level=%s ",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        (long)(tv.tv_usec / 1000), (long)getpid(), log_program, level_names[(int)lvl & 3]);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = (int)sizeof line - 2;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2) len = sizeof line - 2;
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n') line[i] = ' ';
    line[len++] = '\n';
    ssize_t w = write(2, line, len);
    (void)w;
}
