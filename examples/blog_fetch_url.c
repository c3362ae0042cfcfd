/* SPDX-License-Identifier: MIT */
/*
 * blog_fetch_url.c - blog post "Simpler Parallelism with
 * concurrent.futures", "The High-Level Approach":
 *
 *     def fetch_url(url):
 *         response = requests.get(url)
 *         return len(response.content)
 *
 *     urls = ['https://example.com', 'https://python.org',
 *             'https://github.com']
 *
 *     with ThreadPoolExecutor(max_workers=3) as executor:
 *         results = executor.map(fetch_url, urls)
 *
 *     for url, size in zip(urls, results):
 *         print(f"{url}: {size} bytes")
 *
 * and, from "The Subtle Bits", the same map with max_workers=50.
 *
 * The example must run without a network, so it starts its own small
 * HTTP server on 127.0.0.1 (an ephemeral port, in a thread of its own)
 * that serves a page of a different size at /example.com, /python.org and
 * /github.com.  fetch_url does what requests.get() does, with libcurl, the
 * C library people use for HTTP: one easy handle per call (a handle must
 * not be shared between threads), the body counted as it arrives, and an
 * HTTP error status raised as HTTPError (response.raise_for_status()).
 * curl_global_init() runs in main() before any pool thread starts, as
 * libcurl requires.
 *
 * As in the post, the results are read after the `with` block: the
 * executor has finished every call, and the map iterator keeps their
 * outcomes.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "example_util.h"

/* ---- the loopback server ---------------------------------------------- */

static const struct {
    const char *path;
    size_t size;
} pages[] = {
    {"/example.com", 1256},
    {"/python.org", 50918},
    {"/github.com", 284163},
};
enum { NPAGES = sizeof pages / sizeof pages[0] };

typedef struct {
    int listen_fd;
    int stop_pipe[2]; /* main writes a byte here to stop the server */
    unsigned short port;
    pthread_t thread;
} server;

static bool write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Answers one request: reads the request head, then sends the page. */
static void serve_one(int fd)
{
    char req[2048];
    size_t len = 0;
    while (len < sizeof req - 1) {
        ssize_t r = recv(fd, req + len, sizeof req - 1 - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        len += (size_t)r;
        req[len] = '\0';
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    char path[256] = "";
    if (sscanf(req, "GET %255s HTTP/", path) != 1)
        path[0] = '\0';

    size_t size = 0;
    bool found = false;
    for (size_t i = 0; i < NPAGES; i++)
        if (strcmp(path, pages[i].path) == 0) {
            size = pages[i].size;
            found = true;
        }
    char head[256];
    if (!found) {
        int n = snprintf(head, sizeof head,
                         "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        write_all(fd, head, (size_t)n);
        return;
    }
    int n = snprintf(head, sizeof head,
                     "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     size);
    if (!write_all(fd, head, (size_t)n))
        return;
    /* The body: the page's name, then filler. */
    char chunk[4096];
    memset(chunk, 'x', sizeof chunk);
    snprintf(chunk, sizeof chunk, "<html>%s", path + 1);
    chunk[strlen(chunk)] = 'x';
    for (size_t sent = 0; sent < size;) {
        size_t part = size - sent < sizeof chunk ? size - sent : sizeof chunk;
        if (!write_all(fd, chunk, part))
            return;
        sent += part;
    }
}

static void *server_main(void *arg)
{
    server *s = arg;
    for (;;) {
        struct pollfd fds[2] = {{s->listen_fd, POLLIN, 0},
                                {s->stop_pipe[0], POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents)
            break;
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        serve_one(fd);
        close(fd);
    }
    return NULL;
}

static int server_start(server *s)
{
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0)
        return -1;
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0; /* let the kernel pick a free port */
    socklen_t alen = sizeof addr;
    if (bind(s->listen_fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(s->listen_fd, 16) != 0 ||
        getsockname(s->listen_fd, (struct sockaddr *)&addr, &alen) != 0 ||
        pipe(s->stop_pipe) != 0) {
        close(s->listen_fd);
        return -1;
    }
    s->port = ntohs(addr.sin_port);
    if (pthread_create(&s->thread, NULL, server_main, s) != 0) {
        close(s->listen_fd);
        close(s->stop_pipe[0]);
        close(s->stop_pipe[1]);
        return -1;
    }
    return 0;
}

static void server_stop(server *s)
{
    ssize_t w;
    do
        w = write(s->stop_pipe[1], "x", 1);
    while (w < 0 && errno == EINTR);
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
}

/* ---- the task: requests.get(url) -> len(response.content) -------------- */

/* libcurl hands the body over in pieces; counting them is
 * len(response.content). */
static size_t count_body(char *data, size_t size, size_t nmemb, void *arg)
{
    (void)data;
    *(int64_t *)arg += (int64_t)(size * nmemb);
    return size * nmemb;
}

static int fetch_url(cf_call *call)
{
    const char *url = cf_arg_str(call, 0);
    CURL *curl = curl_easy_init();
    if (!curl)
        return cf_raise(call, 1, "MemoryError", "curl_easy_init failed");
    char error[CURL_ERROR_SIZE] = "";
    int64_t content_length = 0;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, count_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &content_length);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);   /* we run in a pool thread */
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");   /* the server is on loopback */
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);

    if (rc != CURLE_OK)
        return cf_raise(call, (int)rc, "ConnectionError", "%s: %s", url,
                        error[0] ? error : curl_easy_strerror(rc));
    if (status != 200) /* response.raise_for_status() */
        return cf_raise(call, (int)status, "HTTPError", "%ld for url %s", status,
                        url);
    return cf_return_i64(call, content_length);
}

/* with ThreadPoolExecutor(max_workers=...) as executor:
 *     results = executor.map(fetch_url, urls)
 * for url, size in zip(urls, results):
 *     print(f"{url}: {size} bytes") */
static int fetch_all(char urls[][96], const cf_value *url_values,
                     int max_workers)
{
    cf_map_iter *results;
    {
        CF_WITH_EXECUTOR(executor);
        cf_thread_pool_options opts;
        cf_thread_pool_options_init(&opts);
        opts.max_workers = max_workers;
        ex_check(cf_thread_pool_new(&executor, &opts), "cf_thread_pool_new");
        cf_map_input in = cf_input_array(url_values, NPAGES);
        ex_check(cf_map(executor, fetch_url, &in, 1, NULL, &results), "cf_map");
    }

    int status = 0;
    for (size_t i = 0; i < NPAGES; i++) {
        const cf_value *size;
        const cf_failure *e;
        int rc = cf_map_next(results, &size, &e);
        if (rc == CF_OK) {
            printf("%s: %lld bytes\n", urls[i], (long long)size->as.i64);
        } else {
            fprintf(stderr, "%s: %s %s: %s\n", urls[i], cf_err_name(rc),
                    cf_failure_type(e), cf_failure_message(e));
            status = 1;
        }
    }
    cf_map_close(results);
    return status;
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "curl_global_init failed\n");
        return 1;
    }
    server srv;
    if (server_start(&srv) != 0) {
        perror("starting the loopback server");
        return 1;
    }

    char urls[NPAGES][96];
    cf_value url_values[NPAGES];
    for (size_t i = 0; i < NPAGES; i++) {
        snprintf(urls[i], sizeof urls[i], "http://127.0.0.1:%u%s",
                 (unsigned)srv.port, pages[i].path);
        url_values[i] = cf_str(urls[i]);
    }

    int status = fetch_all(urls, url_values, 3);
    /* "The Subtle Bits": for I/O-bound work you might go higher.  The pool
     * starts threads only as calls need them, so 50 costs nothing here. */
    if (status == 0) {
        printf("with max_workers=50:\n");
        status = fetch_all(urls, url_values, 50);
    }
    server_stop(&srv);
    curl_global_cleanup();
    return status;
}
