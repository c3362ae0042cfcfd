/* SPDX-License-Identifier: MIT */
/*
 * registry.c - task functions by name, for engines whose workers live in
 * another address space (a function pointer means nothing after exec and
 * address-space randomisation; a name does).
 *
 * Design notes
 * - One table, open addressing keyed by name; a second index maps
 *   pointer -> entry for submit.  Both are guarded by `mu` (a rwlock:
 *   registrations happen at start-up, lookups on every submit to a process
 *   pool).  Entries are never removed, so a name pointer handed out stays
 *   valid for the life of the process.
 * - A name registered for two different functions is marked `clash`:
 *   lookups by that name fail and submitting either function fails, rather
 *   than one of them being run by chance in the worker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define NAME_MAX_LEN 255

typedef struct entry {
    cf_task_fn *fn;
    bool clash;
    size_t len;
    char name[]; /* NUL-terminated */
} entry;

static pthread_rwlock_t mu = PTHREAD_RWLOCK_INITIALIZER;
/* Guarded by mu: */
static entry **by_name; /* open addressing, `cap` slots, NULL = empty */
static entry **by_fn;   /* likewise, keyed by fn; clashing entries included */
static size_t cap, used;
/* The functions refused a name another function had (the entry's own
 * function is found through by_fn), so that a submit of one can say why
 * it is refused (cf__task_unregistered_hint).  Guarded by mu; only
 * grows, and only on a clash, which a program makes a few times at most. */
typedef struct clash_fn {
    struct clash_fn *next;
    cf_task_fn *fn;
    const entry *e;
} clash_fn;
static clash_fn *clash_fns;
/* Bumped under the write lock by every registration that changes an
 * answer (a new entry, a clash); read with acquire by cf_task_name()'s
 * per-thread cache, which trusts its entry only while this is unchanged. */
static _Atomic uint64_t generation;

/* The last answer of cf_task_name() in this thread, and the generation
 * it was read under: a process pool's submit asks for the same function
 * call after call, and the read lock is two contended atomics. */
static _Thread_local struct {
    cf_task_fn *fn;
    const char *name;
    uint64_t generation;
} last;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_ptr(cf_task_fn *fn)
{
    uint64_t x = (uint64_t)(uintptr_t)fn;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static entry **find_name(entry **tab, size_t tcap, const char *name, size_t len)
{
    size_t i = hash_bytes(name, len) & (tcap - 1);
    while (tab[i] && !(tab[i]->len == len && memcmp(tab[i]->name, name, len) == 0))
        i = (i + 1) & (tcap - 1);
    return &tab[i];
}

static entry **find_fn(entry **tab, size_t tcap, cf_task_fn *fn)
{
    size_t i = hash_ptr(fn) & (tcap - 1);
    while (tab[i] && tab[i]->fn != fn)
        i = (i + 1) & (tcap - 1);
    return &tab[i];
}

/* Doubles the tables.  mu held for writing. */
static int grow(void)
{
    size_t ncap = cap ? cap * 2 : 64;
    entry **nn = calloc(ncap, sizeof *nn), **nf = calloc(ncap, sizeof *nf);
    if (!nn || !nf) {
        free(nn);
        free(nf);
        return CF_ENOMEM;
    }
    for (size_t i = 0; i < cap; i++) {
        if (by_name[i])
            *find_name(nn, ncap, by_name[i]->name, by_name[i]->len) = by_name[i];
        if (by_fn[i])
            *find_fn(nf, ncap, by_fn[i]->fn) = by_fn[i];
    }
    free(by_name);
    free(by_fn);
    by_name = nn;
    by_fn = nf;
    cap = ncap;
    return CF_OK;
}

/* Notes that fn was refused e's name.  mu held for writing.  Without
 * memory the note is left out: only the hint is less precise then. */
static void note_clash(cf_task_fn *fn, const entry *e)
{
    for (const clash_fn *c = clash_fns; c; c = c->next)
        if (c->fn == fn && c->e == e)
            return;
    clash_fn *c = malloc(sizeof *c);
    if (!c)
        return;
    c->fn = fn;
    c->e = e;
    c->next = clash_fns;
    clash_fns = c;
}

CF__API int cf_task_register(const char *name, cf_task_fn *fn)
{
    if (!name || !fn)
        return cf__fail(CF_EINVAL, "task_register: %s is NULL", !name ? "name" : "fn");
    size_t len = strlen(name);
    if (len == 0 || len > NAME_MAX_LEN)
        return cf__fail(CF_EINVAL, "task_register: name must be 1..%d bytes, got %zu",
                        NAME_MAX_LEN, len);
    pthread_rwlock_wrlock(&mu);
    int rc = CF_OK;
    if ((used + 1) * 2 > cap && (rc = grow()) != CF_OK) {
        pthread_rwlock_unlock(&mu);
        return cf__fail(rc, "task_register: out of memory");
    }
    entry **slot = find_name(by_name, cap, name, len);
    if (*slot) {
        entry *e = *slot;
        if (e->fn == fn) {
            pthread_rwlock_unlock(&mu);
            return CF_OK;
        }
        e->clash = true;
        note_clash(fn, e);
        atomic_fetch_add_explicit(&generation, 1, memory_order_release);
        pthread_rwlock_unlock(&mu);
        return cf__fail(CF_EINVAL, "task_register: name \"%s\" is already registered for "
                                   "another function; neither can be sent to a worker now "
                                   "(give one of them another name)", name);
    }
    entry *e = malloc(sizeof *e + len + 1);
    if (!e) {
        pthread_rwlock_unlock(&mu);
        return cf__fail(CF_ENOMEM, "task_register: out of memory");
    }
    e->fn = fn;
    e->clash = false;
    e->len = len;
    memcpy(e->name, name, len + 1);
    *slot = e;
    entry **fslot = find_fn(by_fn, cap, fn);
    if (!*fslot)
        *fslot = e; /* one function under two names: the first name is used */
    used++;
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    pthread_rwlock_unlock(&mu);
    return CF_OK;
}

CF__API void cf__task_register_ctor(const char *name, cf_task_fn *fn)
{
    if (cf_task_register(name, fn) != CF_OK) {
        /* Constructors run before main() installs a log hook; stderr is
         * the only channel that surely exists. */
        fprintf(stderr, "cfutures: CF_TASK(%s): %s\n", name ? name : "(null)",
                cf_last_error_message());
    }
}

CF__API const char *cf_task_name(cf_task_fn *fn)
{
    if (!fn)
        return NULL;
    if (last.fn == fn &&
        last.generation == atomic_load_explicit(&generation, memory_order_acquire))
        return last.name;
    const char *name = NULL;
    pthread_rwlock_rdlock(&mu);
    /* Stable while the read lock is held: writers bump it under theirs. */
    uint64_t gen = atomic_load_explicit(&generation, memory_order_relaxed);
    if (cap) {
        entry *e = *find_fn(by_fn, cap, fn);
        if (e && !e->clash)
            name = e->name;
    }
    pthread_rwlock_unlock(&mu);
    last.fn = fn;
    last.name = name;
    last.generation = gen;
    return name;
}

const char *cf__task_unregistered_hint(cf_task_fn *fn)
{
    static _Thread_local char hint[NAME_MAX_LEN + 160];
    const entry *e = NULL;
    pthread_rwlock_rdlock(&mu);
    if (cap && fn) {
        e = *find_fn(by_fn, cap, fn);
        if (e && !e->clash)
            e = NULL;
        for (const clash_fn *c = clash_fns; c && !e; c = c->next)
            if (c->fn == fn)
                e = c->e;
    }
    bool clash = e != NULL;
    if (clash)
        snprintf(hint, sizeof hint, "its name \"%s\" is registered for two functions; "
                 "rename one (cf_task_register)", e->name);
    pthread_rwlock_unlock(&mu);
    return clash ? hint : "add CF_TASK(fn) after its definition";
}

cf_task_fn *cf__task_lookup(const char *name, size_t len)
{
    cf_task_fn *fn = NULL;
    pthread_rwlock_rdlock(&mu);
    if (cap) {
        entry *e = *find_name(by_name, cap, name, len);
        if (e && !e->clash)
            fn = e->fn;
    }
    pthread_rwlock_unlock(&mu);
    return fn;
}
