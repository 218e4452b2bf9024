/* The numbered schema migrations (schema/NNN_name.sql), embedded into the
 * binary by schema/embed.sh (a Makefile rule generates the C file), so that
 * the server never depends on a path at run time. */
#ifndef HD_SERVER_MIGRATIONS_H
#define HD_SERVER_MIGRATIONS_H

#include <stddef.h>

typedef struct {
    int version;      /* NNN of the file name, strictly increasing */
    const char *name; /* file name without ".sql" */
    const char *sql;  /* the file's text, NUL-terminated */
} store_migration;

extern const store_migration store_migrations[];
extern const size_t store_migrations_count;

#endif
