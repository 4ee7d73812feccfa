/*
 * cal_intern.c — one copy of each VTIMEZONE text for the whole process.
 *
 * Nearly every invitation carries the VTIMEZONEs it uses, and most carry
 * the same few (Outlook's run to several KB each). Versions keep text for
 * the life of a mount, so without sharing, 10,000 invitations would hold
 * 10,000 copies of "W. Europe Standard Time". Texts are reference-counted
 * in a hash set under one mutex. Thread-safe.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cal_internal.h"

struct interned {
    struct interned *next;
    uint64_t hash;
    size_t refs;
    size_t len;
    char text[];
};

static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;
static struct interned **intern_table;
static size_t intern_cap, intern_count;

static uint64_t text_hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static struct interned *from_text(const char *text)
{
    return (struct interned *)(text - offsetof(struct interned, text));
}

static int table_grow(void)
{
    size_t cap = intern_cap ? intern_cap * 2 : 256;
    struct interned **t = calloc(cap, sizeof *t);

    if (t == NULL)
        return -1;
    for (size_t i = 0; i < intern_cap; i++)
        for (struct interned *e = intern_table[i], *next; e; e = next) {
            next = e->next;
            e->next = t[e->hash & (cap - 1)];
            t[e->hash & (cap - 1)] = e;
        }
    free(intern_table);
    intern_table = t;
    intern_cap = cap;
    return 0;
}

const char *cal_intern(const char *text, size_t len)
{
    uint64_t h = text_hash(text, len);
    struct interned *e;

    pthread_mutex_lock(&intern_lock);
    if (intern_count >= intern_cap && table_grow() != 0 && intern_cap == 0) {
        pthread_mutex_unlock(&intern_lock);
        return NULL;
    }
    for (e = intern_table[h & (intern_cap - 1)]; e; e = e->next)
        if (e->hash == h && e->len == len && memcmp(e->text, text, len) == 0) {
            e->refs++;
            pthread_mutex_unlock(&intern_lock);
            return e->text;
        }
    if ((e = malloc(sizeof *e + len + 1)) != NULL) {
        e->hash = h;
        e->refs = 1;
        e->len = len;
        memcpy(e->text, text, len);
        e->text[len] = '\0';
        e->next = intern_table[h & (intern_cap - 1)];
        intern_table[h & (intern_cap - 1)] = e;
        intern_count++;
    }
    pthread_mutex_unlock(&intern_lock);
    return e ? e->text : NULL;
}

void cal_unintern(const char *text)
{
    struct interned *e, **p;

    if (text == NULL)
        return;
    e = from_text(text);
    pthread_mutex_lock(&intern_lock);
    if (--e->refs == 0) {
        for (p = &intern_table[e->hash & (intern_cap - 1)]; *p != e; p = &(*p)->next)
            ;
        *p = e->next;
        intern_count--;
        free(e);
    }
    pthread_mutex_unlock(&intern_lock);
}
