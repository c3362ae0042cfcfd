/* SPDX-License-Identifier: MIT */
/*
 * loop_glib.c - a thread pool driven from a GLib main loop (see
 * loop_common.h for the calls): a small GSource watches the completion
 * queue's descriptor and dispatches each completed future to a handler.
 */
#include <glib.h>

#include "loop_common.h"

/* ---- a GSource for a completion queue (reusable as it is) ------------- */

typedef gboolean cq_handler(cf_future *done, gpointer user_data);

typedef struct cq_source {
    GSource base;
    cf_completion_queue *q;
    gpointer tag;
} cq_source;

static gboolean cq_source_check(GSource *base)
{
    cq_source *s = (cq_source *)base;
    return (g_source_query_unix_fd(base, s->tag) & G_IO_IN) != 0;
}

/* Pops every completed future and hands each to the handler, which owns
 * the reference from then on.  A FALSE return removes the source. */
static gboolean cq_source_dispatch(GSource *base, GSourceFunc callback, gpointer user_data)
{
    cq_source *s = (cq_source *)base;
    cq_handler *handler = (cq_handler *)(void *)callback;
    cf_future *done[WINDOW];
    int n;
    gboolean keep = TRUE;
    while ((n = cf_cq_pop(s->q, done, WINDOW)) > 0)
        for (int k = 0; k < n; k++)
            if (!handler(done[k], user_data))
                keep = FALSE;
    return keep;
}

static GSourceFuncs cq_source_funcs = {
    .check = cq_source_check,
    .dispatch = cq_source_dispatch,
};

static GSource *cq_source_new(cf_completion_queue *q)
{
    GSource *base = g_source_new(&cq_source_funcs, sizeof(cq_source));
    cq_source *s = (cq_source *)base;
    s->q = q;
    s->tag = g_source_add_unix_fd(base, cf_cq_fd(q), G_IO_IN);
    return base;
}

/* ---- the program ------------------------------------------------------ */

typedef struct loop_state {
    loop_calls calls;
    GMainLoop *loop;
} loop_state;

static gboolean on_done(cf_future *f, gpointer user_data)
{
    loop_state *s = user_data;
    if (loop_calls_done(&s->calls, f))
        return TRUE;
    g_main_loop_quit(s->loop);
    return FALSE;
}

int main(void)
{
    loop_state s = {0};
    loop_calls_start(&s.calls);
    s.loop = g_main_loop_new(NULL, FALSE);
    GSource *src = cq_source_new(s.calls.q);
    g_source_set_callback(src, (GSourceFunc)(void *)on_done, &s, NULL);
    g_source_attach(src, NULL);
    g_main_loop_run(s.loop);
    g_source_destroy(src);
    g_source_unref(src);
    g_main_loop_unref(s.loop);
    loop_calls_finish(&s.calls, "GLib");
    return 0;
}
