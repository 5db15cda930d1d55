/* For the store tests: a fresh PostgreSQL database per run, when the
 * environment names a server (AUTHD_TEST_PG_URL, a libpq URI of a role
 * that may create databases; scripts/pg_test_server.sh makes one). Each
 * run gets its own database, dropped at the end. Header-only, like tap.h. */
#ifndef AUTHD_TEST_PG_FIXTURE_H
#define AUTHD_TEST_PG_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

static char pgfx_names[16][64];
static int pgfx_count;

static inline int pgfx_sql(const char *base, const char *sql)
{
    PGconn *c = PQconnectdb(base);
    PGresult *r;
    int good;

    if (PQstatus(c) != CONNECTION_OK) {
        printf("# postgresql: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    r = PQexec(c, sql);
    good = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!good)
        printf("# postgresql: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return good ? 0 : -1;
}

/* The URL of a new empty database named after tag and this process, in
 * out; 0, or -1 (no server configured, or it failed). */
static inline int pgfx_fresh(const char *tag, char *out, size_t outlen)
{
    const char *base = getenv("AUTHD_TEST_PG_URL");
    char sql[160], *name;

    if (base == NULL || *base == '\0' || pgfx_count >= 16)
        return -1;
    name = pgfx_names[pgfx_count];
    snprintf(name, sizeof(pgfx_names[0]), "authd_%s_%d_%d", tag, (int)getpid(),
             pgfx_count);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    if (pgfx_sql(base, sql) != 0)
        return -1;
    pgfx_count++;
    /* A dbname parameter overrides the one in the URI's path. */
    snprintf(out, outlen, "%s%sdbname=%s", base, strchr(base, '?') ? "&" : "?",
             name);
    return 0;
}

/* Drops every database pgfx_fresh made. */
static inline void pgfx_drop_all(void)
{
    const char *base = getenv("AUTHD_TEST_PG_URL");
    char sql[160];

    for (; base != NULL && pgfx_count > 0; pgfx_count--) {
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)",
                 pgfx_names[pgfx_count - 1]);
        pgfx_sql(base, sql);
    }
}

#endif
