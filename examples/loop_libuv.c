/* SPDX-License-Identifier: MIT */
/*
 * loop_libuv.c - a thread pool driven from a libuv loop (see
 * loop_common.h for the calls): a uv_poll_t watches the completion
 * queue's descriptor, and its callback pops the completed futures.
 */
#include <uv.h>

#include "loop_common.h"

static void on_readable(uv_poll_t *handle, int status, int events)
{
    if (status < 0 || !(events & UV_READABLE)) {
        fprintf(stderr, "uv_poll: %s\n", uv_strerror(status));
        exit(1);
    }
    if (!loop_calls_drain(handle->data))
        uv_poll_stop(handle); /* nothing left to watch: uv_run() returns */
}

int main(void)
{
    loop_calls c = {0};
    loop_calls_start(&c);
    uv_loop_t *loop = uv_default_loop();
    uv_poll_t poll;
    if (uv_poll_init(loop, &poll, cf_cq_fd(c.q)) != 0) {
        fprintf(stderr, "uv_poll_init failed\n");
        return 1;
    }
    poll.data = &c;
    uv_poll_start(&poll, UV_READABLE, on_readable);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&poll, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    loop_calls_finish(&c, "libuv");
    return 0;
}
