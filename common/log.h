/* One-line logging to stderr (STYLE C13): UTC timestamp, pid, program, level,
 * key=value message. The level is tested before anything is formatted. The
 * numerical and codec modules never log; only programs and services do. */
#ifndef HD_LOG_H
#define HD_LOG_H

typedef enum {
    HD_LOG_LVL_ERROR = 0,
    HD_LOG_LVL_WARN,
    HD_LOG_LVL_INFO,
    HD_LOG_LVL_DEBUG
} hd_log_level;

/* Process-wide sink settings; call from main() before threads start. */
void hd_log_init(const char *program, hd_log_level level);
/* Parse "error", "warn", "info" or "debug"; returns -1 if unknown. */
int hd_log_level_parse(const char *s);
hd_log_level hd_log_level_get(void);
/* Write one line. Thread-safe (one write(2) per line). */
void hd_log_write(hd_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define HD_LOG_AT(lvl, ...)                                                                        \
    do {                                                                                           \
        if ((lvl) <= hd_log_level_get()) hd_log_write((lvl), __VA_ARGS__);                         \
    } while (0)
#define HD_LOG_ERROR(...) HD_LOG_AT(HD_LOG_LVL_ERROR, __VA_ARGS__)
#define HD_LOG_WARN(...) HD_LOG_AT(HD_LOG_LVL_WARN, __VA_ARGS__)
#define HD_LOG_INFO(...) HD_LOG_AT(HD_LOG_LVL_INFO, __VA_ARGS__)
#define HD_LOG_DEBUG(...) HD_LOG_AT(HD_LOG_LVL_DEBUG, __VA_ARGS__)

#endif
