/* SPDX-License-Identifier: MIT */
/*
 * blog_query_database.c - blog post "Simpler Parallelism with
 * concurrent.futures", "When Each Executor Makes Sense" (database
 * queries are I/O, a good fit for threads):
 *
 *     def query_database(db_path, query):
 *         conn = sqlite3.connect(db_path)
 *         cursor = conn.cursor()
 *         cursor.execute(query)
 *         results = cursor.fetchall()
 *         conn.close()
 *         return results
 *
 *     databases = ['users.db', 'orders.db', 'inventory.db']
 *     query = "SELECT COUNT(*) FROM main_table"
 *
 *     with ThreadPoolExecutor(max_workers=3) as executor:
 *         counts = executor.map(lambda db: query_database(db, query),
 *                               databases)
 *
 * The program first creates the three SQLite files in a fresh temporary
 * directory, each with a main_table of a different size, and removes them
 * at the end.  The post does not print `counts`; this program prints each
 * database with fetchall()'s result, the way Python would show it.
 */
#include <sqlite3.h>
#include <unistd.h>

#include "example_util.h"

static const char *const databases[] = {"users.db", "orders.db",
                                        "inventory.db"};
static const int row_counts[] = {120, 3456, 78};
enum { NDB = 3 };

/* The lambda's captured variable. */
static const char *const query = "SELECT COUNT(*) FROM main_table";

/* fetchall() as Python prints it: a list of tuples, here of integers and
 * text. */
static int query_database(cf_call *call)
{
    const char *db_path = cf_arg_str(call, 0);
    sqlite3 *conn;
    if (sqlite3_open_v2(db_path, &conn, SQLITE_OPEN_READONLY, NULL) !=
        SQLITE_OK) {
        int rc = cf_raise(call, 1, "OperationalError", "%s: %s", db_path,
                          sqlite3_errmsg(conn));
        sqlite3_close(conn);
        return rc;
    }
    sqlite3_stmt *cursor;
    if (sqlite3_prepare_v2(conn, query, -1, &cursor, NULL) != SQLITE_OK) {
        int rc = cf_raise(call, 1, "OperationalError", "%s",
                          sqlite3_errmsg(conn));
        sqlite3_close(conn);
        return rc;
    }
    char results[1024] = "[";
    size_t len = 1;
    int step;
    while ((step = sqlite3_step(cursor)) == SQLITE_ROW) {
        int ncol = sqlite3_column_count(cursor);
        len += (size_t)snprintf(results + len, sizeof results - len, "%s(",
                                len > 1 ? ", " : "");
        for (int c = 0; c < ncol && len < sizeof results; c++) {
            const char *sep = c ? ", " : "";
            if (sqlite3_column_type(cursor, c) == SQLITE_INTEGER)
                len += (size_t)snprintf(results + len, sizeof results - len,
                                        "%s%lld", sep,
                                        sqlite3_column_int64(cursor, c));
            else
                len += (size_t)snprintf(
                    results + len, sizeof results - len, "%s'%s'", sep,
                    (const char *)sqlite3_column_text(cursor, c));
        }
        if (len < sizeof results)
            len += (size_t)snprintf(results + len, sizeof results - len, "%s)",
                                    ncol == 1 ? "," : "");
    }
    int rc;
    if (step != SQLITE_DONE)
        rc = cf_raise(call, 1, "OperationalError", "%s", sqlite3_errmsg(conn));
    else if (len + 2 > sizeof results)
        rc = cf_raise(call, 1, "ValueError", "result too long to show");
    else
        rc = cf_return_str(call, strcat(results, "]"));
    sqlite3_finalize(cursor);
    sqlite3_close(conn);
    return rc;
}

/* Creates dir/name with a main_table of `rows` rows. */
static int make_database(const char *path, int rows)
{
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    char sql[256];
    snprintf(sql, sizeof sql,
             "CREATE TABLE main_table(id INTEGER PRIMARY KEY, name TEXT);"
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
             "WHERE i < %d) "
             "INSERT INTO main_table(id, name) SELECT i, 'row ' || i FROM n;",
             rows);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", path, err);
        sqlite3_free(err);
    }
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/cfutures-dbXXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char paths[NDB][sizeof dir + 32] = {{0}};
    int status = 0;
    for (int i = 0; i < NDB && status == 0; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%s", dir, databases[i]);
        status = make_database(paths[i], row_counts[i]);
    }

    if (status == 0) {
        CF_WITH_EXECUTOR(executor);
        cf_thread_pool_options opts;
        cf_thread_pool_options_init(&opts);
        opts.max_workers = 3;
        ex_check(cf_thread_pool_new(&executor, &opts), "cf_thread_pool_new");

        cf_value dbs[NDB];
        for (int i = 0; i < NDB; i++)
            dbs[i] = cf_str(paths[i]);
        cf_map_input in = cf_input_array(dbs, NDB);
        cf_map_iter *counts;
        ex_check(cf_map(executor, query_database, &in, 1, NULL, &counts),
                 "cf_map");
        for (int i = 0;; i++) {
            const cf_value *v;
            const cf_failure *e;
            int rc = cf_map_next(counts, &v, &e);
            if (rc == CF_EDONE)
                break;
            if (rc == CF_OK) {
                printf("%s: %s\n", databases[i], v->as.str);
            } else if (rc != CF_ETASK && rc != CF_EBROKEN &&
                       rc != CF_ECANCELLED) {
                ex_check(rc, "cf_map_next");
            } else {
                fprintf(stderr, "%s: %s: %s\n", databases[i],
                        cf_failure_type(e), cf_failure_message(e));
                status = 1;
            }
        }
        cf_map_close(counts);
    }

    for (int i = 0; i < NDB; i++)
        if (paths[i][0])
            unlink(paths[i]);
    rmdir(dir);
    return status == 0 ? 0 : 1;
}
