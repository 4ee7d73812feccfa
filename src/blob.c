/* blob.c — immutable reference-counted bytes. */
#include "blob.h"

#include <stdlib.h>
#include <string.h>

struct blob *blob_new(const char *data, size_t len)
{
    struct blob *b = malloc(sizeof *b + len + 1);

    if (b == NULL)
        return NULL;
    atomic_init(&b->refs, 1);
    b->len = len;
    if (len)
        memcpy(b->data, data, len);
    b->data[len] = '\0';
    return b;
}

struct blob *blob_take(char *buf, size_t len)
{
    struct blob *b = blob_new(buf, len);

    free(buf);
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
    if (b && atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

int blob_equal(const struct blob *a, const struct blob *b)
{
    if (a == b)
        return 1;
    if (a == NULL || b == NULL || a->len != b->len)
        return 0;
    return memcmp(a->data, b->data, a->len) == 0;
}
