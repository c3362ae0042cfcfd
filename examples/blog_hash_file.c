/* SPDX-License-Identifier: MIT */
/*
 * blog_hash_file.c - blog post "Simpler Parallelism with
 * concurrent.futures", "When to Use Which":
 *
 *     def hash_file(filepath):
 *         hasher = hashlib.sha256()
 *         with open(filepath, 'rb') as f:
 *             for chunk in iter(lambda: f.read(4096), b''):
 *                 hasher.update(chunk)
 *         return filepath, hasher.hexdigest()
 *
 *     files = ['large_file1.bin', 'large_file2.bin', 'large_file3.bin']
 *
 *     with ProcessPoolExecutor(max_workers=4) as executor:
 *         for filepath, digest in executor.map(hash_file, files):
 *             print(f"{filepath}: {digest}")
 *
 * hashlib.sha256() is OpenSSL's SHA-256 through its EVP interface.  The
 * program makes its own three large files (4, 6 and 8 MiB of
 * pseudo-random bytes from a fixed seed) in a private temporary directory
 * and removes them at the end, so the digests are the same on every run.
 * The task gets each file's full path and returns the (filepath, digest)
 * tuple as one bytes value holding two NUL-terminated strings; main
 * prints the file's name without the temporary directory.
 *
 * Built a second time with CF_EXAMPLE_MPI as mpi_blog_hash_file: the same
 * program on the MPI engine (the lines under CF_EXAMPLE_MPI).
 */
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <unistd.h>

#include "example_util.h"
#ifdef CF_EXAMPLE_MPI
#include "cfutures_mpi.h"
#endif

/* ---- the task --------------------------------------------------------- */

static int hash_file(cf_call *call)
{
    const char *filepath = cf_arg_str(call, 0);
    FILE *f = fopen(filepath, "rb");
    if (!f)
        return cf_raise(call, errno, "OSError", "%s: %s", filepath,
                        strerror(errno));
    EVP_MD_CTX *hasher = EVP_MD_CTX_new();
    if (!hasher || EVP_DigestInit_ex(hasher, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(hasher);
        fclose(f);
        return cf_raise(call, 1, "ValueError", "cannot set up SHA-256");
    }
    unsigned char chunk[4096];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        ok = EVP_DigestUpdate(hasher, chunk, n) == 1;
    int read_error = ferror(f);
    fclose(f);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    ok = ok && EVP_DigestFinal_ex(hasher, md, &mdlen) == 1;
    EVP_MD_CTX_free(hasher);
    if (read_error)
        return cf_raise(call, EIO, "OSError", "%s: read error", filepath);
    if (!ok)
        return cf_raise(call, 1, "ValueError", "SHA-256 failed");

    /* return filepath, hasher.hexdigest() */
    size_t pathlen = strlen(filepath);
    char *tuple = malloc(pathlen + 1 + 2 * mdlen + 1);
    if (!tuple)
        return cf_raise(call, ENOMEM, "MemoryError", "out of memory");
    memcpy(tuple, filepath, pathlen + 1);
    char *hex = tuple + pathlen + 1;
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    int rc = cf_return_bytes(call, tuple, pathlen + 1 + 2 * mdlen + 1);
    free(tuple);
    return rc;
}
CF_TASK(hash_file);

/* ---- the input files -------------------------------------------------- */

enum { NFILES = 3 };
static const size_t file_mib[NFILES] = {4, 6, 8};

/* Writes `mib` MiB of xorshift64* output, seeded with `seed`, to `path`. */
static bool write_file(const char *path, size_t mib, uint64_t seed)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return false;
    }
    uint64_t x = seed;
    static unsigned char block[1 << 16];
    for (size_t done = 0; done < mib << 20; done += sizeof block) {
        for (size_t i = 0; i < sizeof block; i += 8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            uint64_t r = x * UINT64_C(0x2545F4914F6CDD1D);
            for (int b = 0; b < 8; b++)
                block[i + (size_t)b] = (unsigned char)(r >> (8 * b));
        }
        for (size_t off = 0; off < sizeof block;) {
            ssize_t w = write(fd, block + off, sizeof block - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                close(fd);
                return false;
            }
            off += (size_t)w;
        }
    }
    if (close(fd) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return false;
    }
    return true;
}

/* with ProcessPoolExecutor(max_workers=4) as executor:
 *     for filepath, digest in executor.map(hash_file, files):
 *         print(f"{filepath}: {digest}")
 * Returns 0, or 1 after a message on stderr (main still removes the
 * files). */
static int hash_all(const cf_value *files)
{
#ifdef CF_EXAMPLE_MPI
    cf_mpi_pool_options opts;
    cf_mpi_pool_options_init(&opts);
    opts.max_workers = 4;
    cf_executor *executor;
    int rc = cf_mpi_pool_new(&executor, &opts);
#else
    cf_process_pool_options opts;
    cf_process_pool_options_init(&opts);
    opts.max_workers = 4;
    cf_executor *executor;
    int rc = cf_process_pool_new(&executor, &opts);
#endif
    if (rc != CF_OK) {
        fprintf(stderr, "pool constructor failed: %s (%s)\n",
                cf_err_name(rc), cf_last_error_message());
        return 1;
    }
    int status = 0;
    cf_map_input in = cf_input_array(files, NFILES);
    cf_map_iter *results;
    rc = cf_map(executor, hash_file, &in, 1, NULL, &results);
    if (rc != CF_OK) {
        fprintf(stderr, "cf_map failed: %s (%s)\n", cf_err_name(rc),
                cf_last_error_message());
        results = NULL;
        status = 1;
    }
    const cf_value *v;
    const cf_failure *e = NULL;
    while (results && (rc = cf_map_next(results, &v, &e)) == CF_OK) {
        const char *filepath = v->kind == CF_BYTES ? v->as.bytes : NULL;
        const char *digest = filepath ? memchr(filepath, '\0', v->size) : NULL;
        if (!digest || filepath[v->size - 1] != '\0') {
            fprintf(stderr, "hash_file returned a %s of %zu bytes\n",
                    cf_kind_name(v->kind), v->size);
            status = 1;
            break;
        }
        digest++;
        const char *name = strrchr(filepath, '/');
        printf("%s: %s\n", name ? name + 1 : filepath, digest);
    }
    if (results && rc != CF_OK && rc != CF_EDONE) {
        fprintf(stderr, "hash_file: %s %s: %s\n", cf_err_name(rc),
                cf_failure_type(e), cf_failure_message(e));
        status = 1;
    }
    cf_map_close(results);
    rc = cf_executor_destroy(executor);
    if (rc != CF_OK) {
        fprintf(stderr, "cf_executor_destroy failed: %s (%s)\n",
                cf_err_name(rc), cf_last_error_message());
        status = 1;
    }
    return status;
}

int main(int argc, char **argv)
{
#ifdef CF_EXAMPLE_MPI
    ex_check(cf_mpi_init(argc, argv), "cf_mpi_init");
#else
    ex_check(cf_process_init(argc, argv), "cf_process_init");
#endif

    const char *tmp = getenv("TMPDIR");
    char dir[256];
    snprintf(dir, sizeof dir, "%s/cfutures-hash-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", dir, strerror(errno));
        return 1;
    }

    /* files = ['large_file1.bin', 'large_file2.bin', 'large_file3.bin'] */
    char files[NFILES][512];
    cf_value file_values[NFILES];
    size_t nmade = 0;
    int status = 0;
    for (size_t i = 0; i < NFILES && status == 0; i++) {
        snprintf(files[i], sizeof files[i], "%s/large_file%zu.bin", dir, i + 1);
        if (!write_file(files[i], file_mib[i], UINT64_C(0x9E3779B97F4A7C15) * (i + 1))) {
            unlink(files[i]);
            status = 1;
            break;
        }
        nmade++;
        file_values[i] = cf_str(files[i]);
    }

    if (status == 0)
        status = hash_all(file_values);

    for (size_t i = 0; i < nmade; i++)
        if (unlink(files[i]) != 0) {
            fprintf(stderr, "unlink %s: %s\n", files[i], strerror(errno));
            status = 1;
        }
    if (rmdir(dir) != 0) {
        fprintf(stderr, "rmdir %s: %s\n", dir, strerror(errno));
        status = 1;
    }
    return status;
}
