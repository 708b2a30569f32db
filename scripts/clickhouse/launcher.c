/*
 * ClickHouse launcher for tests and local development (used by scripts/services).
 *
 * What it is: a tiny program that loads the real ClickHouse engine from libchdb.so (the
 * chDB build of ClickHouse, shipped in the npm package @chdb/lib-linux-x64-gnu) and runs it
 * as `clickhouse local` with the given command-line arguments. With
 *
 *   launcher LIBCHDB.so --path=DIR --listen_host=127.0.0.1 --http_port=8123 --tcp_port=9000 \
 *            --interactive --query "SYSTEM START LISTEN QUERIES ALL"
 *
 * the engine opens its HTTP and native-protocol listeners, runs the query, and then keeps
 * reading queries from stdin; the listeners serve until stdin reaches end of file. The
 * caller therefore feeds stdin from a FIFO that another process holds open for as long as
 * the server should live: closing the FIFO's writer stops the server cleanly.
 *
 * Why it exists: no current clickhouse-server package is reachable from this machine, but
 * the npm registry is, and libchdb.so contains the full engine (storage, MergeTree family,
 * HTTP interface). The library has no `main`, only a C entry point, so something has to
 * call it; this is that something. scripts/services compiles it with gcc into its cache
 * directory (outside the repository); no binary is committed.
 *
 * Entry point, from chDB's programs/local/chdb.h (checked against the exported symbols of
 * libchdb.so 26.7.3-stable.1 with `nm -D` and its disassembly: a 48-byte result struct):
 *
 *   struct local_result *query_stable(int argc, char **argv);
 *   void free_result(struct local_result *result);
 *
 * argv follows the clickhouse-local command line, argv[0] being a program name. The result
 * is NULL when the engine produced no output buffer, which is the case both after a normal
 * interactive session (stdin closed) and after an error such as "Address already in use";
 * the engine prints its errors to stderr itself. (query_stable_v2, which adds an
 * error_message field, does not fill it for listener errors in this version and returns a
 * result either way, so it tells no more.)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Layout of chDB's `struct local_result` (the "stable" ABI). */
struct local_result {
    char *buf;          /* output of the queries (the format's bytes, not NUL-terminated) */
    size_t len;         /* number of bytes in buf */
    void *_vec;         /* owned by the library, released by free_result */
    double elapsed;     /* seconds */
    uint64_t rows_read;
    uint64_t bytes_read;
};

typedef struct local_result *(*query_stable_fn)(int argc, char **argv);
typedef void (*free_result_fn)(struct local_result *result);

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr,
                "usage: %s LIBCHDB.so [clickhouse-local arguments...]\n"
                "  e.g. %s libchdb.so --path=DIR --listen_host=127.0.0.1 --http_port=8123 \\\n"
                "       --tcp_port=9000 --interactive --query 'SYSTEM START LISTEN QUERIES ALL'\n",
                argv[0], argv[0]);
        return 2;
    }

    /* RTLD_NOW: fail here, with a clear message, rather than at the first unresolved call. */
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "clickhouse launcher: dlopen %s: %s\n", argv[1], dlerror());
        return 1;
    }
    query_stable_fn query_stable = (query_stable_fn)dlsym(lib, "query_stable");
    free_result_fn free_result = (free_result_fn)dlsym(lib, "free_result");
    if (query_stable == NULL || free_result == NULL) {
        fprintf(stderr, "clickhouse launcher: %s does not export query_stable/free_result\n",
                argv[1]);
        return 1;
    }

    /* The engine's argv: a program name, then our arguments after the library path. */
    int n = argc - 1;
    char **args = calloc((size_t)n + 1, sizeof *args);
    if (args == NULL) {
        perror("clickhouse launcher: calloc");
        return 1;
    }
    args[0] = "clickhouse";
    for (int i = 2; i < argc; i++) args[i - 1] = argv[i];
    args[n] = NULL;

    /* Blocks for the server's whole life: returns once stdin is closed (or on error). */
    struct local_result *result = query_stable(n, args);
    if (result != NULL) {
        if (result->buf != NULL && result->len > 0) fwrite(result->buf, 1, result->len, stdout);
        fflush(stdout);
        free_result(result);
    }
    free(args);
    fprintf(stderr, "clickhouse launcher: engine stopped (an error, if any, is printed above)\n");
    /* No dlclose: the engine's static destructors run at exit either way. */
    return 0;
}
