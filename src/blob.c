/* blob.c — immutable reference-counted bytes. */
#include "blob.h"

#include <stdlib.h>
#include <string.h>

struct blob *blob_new(const char *data, size_t len)
{
    char *copy = malloc(len + 1);

    if (copy == NULL)
        return NULL;
    if (len)
        memcpy(copy, data, len);
    return blob_take(copy, len);
}

struct blob *blob_take(char *buf, size_t len)
{
    struct blob *b = malloc(sizeof *b);
    char *nul;

    /* Callers' buffers are exact: make room for the terminating NUL. */
    if (b == NULL || (nul = realloc(buf, len + 1)) == NULL) {
        free(b);
        free(buf);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->len = len;
    b->data = nul;
    b->data[len] = '\0';
    return b;
}

struct blob *blob_ref(struct blob *b)
{
    if (b)
        atomic_fetch_add(&b->refs, 1);
    return b;
}

void blob_unref(struct blob *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
        free(b->data);
        free(b);
    }
}

int blob_equal(const struct blob *a, const struct blob *b)
{
    if (a == b)
        return 1;
    if (a == NULL || b == NULL || a->len != b->len)
        return 0;
    return memcmp(a->data, b->data, a->len) == 0;
}
