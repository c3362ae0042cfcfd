/* SPDX-License-Identifier: MIT */
/*
 * loop_epoll.c - a thread pool driven from an epoll loop through a
 * completion queue (see loop_common.h for the calls).  No thread ever
 * blocks in cf_wait(): the loop sleeps in epoll_wait() until the queue's
 * descriptor is readable.
 */
#include <sys/epoll.h>
#include <unistd.h>

#include "loop_common.h"

int main(void)
{
    loop_calls c = {0};
    loop_calls_start(&c);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, cf_cq_fd(c.q), &ev) != 0) {
        perror("epoll");
        return 1;
    }
    bool more = true;
    while (more) {
        struct epoll_event got;
        /* Woken by the queue's descriptor, which a completing worker makes
         * readable; the 10 s limit only guards against a bug. */
        int n = epoll_wait(ep, &got, 1, 10000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != 1) {
            fprintf(stderr, "epoll_wait: no completion within 10 s\n");
            return 1;
        }
        more = loop_calls_drain(got.data.ptr);
    }
    close(ep);
    loop_calls_finish(&c, "epoll");
    return 0;
}
