/*
 * test_blob.c — blobs flat and of segments (ropes): length, equality by
 * content however they are cut, ranges, copies, writing, and the release
 * hook running exactly once, when the last reference goes.
 */
#include "blob.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int released;

static void count_release(void *ctx)
{
    released++;
    free(ctx);
}

/* "BEGIN:VCALENDAR\r\n" ... cut into pieces of the given lengths. */
static const char text[] = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:a\r\n"
                           "END:VEVENT\r\nEND:VCALENDAR\r\n";

static struct blob *cut(const size_t *lens, size_t n)
{
    struct iovec v[128];
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        v[i].iov_base = (char *)text + at;
        v[i].iov_len = lens[i];
        at += lens[i];
    }
    return blob_segs(v, n, count_release, malloc(1));
}

static void test_segments_read_as_one_run(void)
{
    size_t lens[] = {17, 0, 13, 14, 7, 12, sizeof text - 1 - 63};
    struct blob *b = cut(lens, 7);
    CHECK(b && b->len == sizeof text - 1);
    CHECK(b && b->nseg == 6); /* the empty one is dropped */
    char *flat = b ? blob_flatten(b) : NULL;
    CHECK_STR(flat, text);
    free(flat);
    char buf[64] = "";
    CHECK(b && blob_copy(b, 10, buf, 20) == 20 && memcmp(buf, text + 10, 20) == 0);
    CHECK(b && blob_copy(b, b->len - 5, buf, 20) == 5 && memcmp(buf, text + b->len - 5, 5) == 0);
    CHECK(b && blob_copy(b, b->len + 3, buf, 20) == 0);
    released = 0;
    blob_unref(b);
    CHECK(released == 1);
}

/* Every range of b reads as the same range of text, by iov and by copy. */
static void check_ranges(struct blob *b)
{
    for (size_t off = 0; b && off <= b->len + 1; off++) {
        for (size_t n = 0; n < 70; n += 7) {
            struct iovec *v = NULL;
            size_t nv = 0, got = 0;
            char buf[128];
            CHECK(blob_iov(b, off, n, &v, &nv) == 0);
            for (size_t i = 0; i < nv; i++) {
                CHECK(v[i].iov_len > 0);
                memcpy(buf + got, v[i].iov_base, v[i].iov_len);
                got += v[i].iov_len;
            }
            size_t want = off >= b->len ? 0 : (b->len - off < n ? b->len - off : n);
            CHECK(got == want && memcmp(buf, text + off, got) == 0);
            CHECK(blob_copy(b, off, buf, n) == want && memcmp(buf, text + off, want) == 0);
            free(v);
        }
    }
}

static void test_iov_covers_exactly_the_range(void)
{
    size_t lens[] = {17, 13, 14, 7, 12, sizeof text - 1 - 63};
    struct blob *b = cut(lens, 6);
    check_ranges(b);
    blob_unref(b);

    /* Many segments: found by offset with a binary search. */
    size_t many[128], n = 0, at = 0;
    while (at < sizeof text - 1) {
        many[n] = 1 + n % 3 < sizeof text - 1 - at ? 1 + n % 3 : sizeof text - 1 - at;
        at += many[n++];
    }
    b = cut(many, n);
    CHECK(b && b->nseg == n && b->ends != NULL);
    check_ranges(b);
    char *flat = b ? blob_flatten(b) : NULL;
    CHECK_STR(flat, text);
    free(flat);
    blob_unref(b);
}

static void test_equal_by_content_however_cut(void)
{
    size_t a[] = {17, 13, 14, 7, 12, sizeof text - 1 - 63};
    size_t c[] = {30, 33, sizeof text - 1 - 63};
    struct blob *x = cut(a, 6), *y = cut(c, 3), *flat = blob_new(text, sizeof text - 1);
    struct blob *other = blob_new(text, sizeof text - 2);
    char changed[sizeof text];
    memcpy(changed, text, sizeof text);
    changed[40] = 'X';
    struct blob *z = blob_new(changed, sizeof text - 1);
    CHECK(blob_equal(x, y) && blob_equal(y, x));
    CHECK(blob_equal(x, flat) && blob_equal(flat, y));
    CHECK(!blob_equal(x, other) && !blob_equal(x, z) && !blob_equal(z, y));
    CHECK(!blob_equal(x, NULL) && blob_equal(NULL, NULL));
    struct blob *e1 = blob_new("", 0), *e2 = blob_segs(NULL, 0, NULL, NULL);
    CHECK(e1 && e2 && blob_equal(e1, e2) && e2->len == 0);
    blob_unref(e1);
    blob_unref(e2);
    released = 0;
    blob_ref(x);
    blob_unref(x);
    CHECK(released == 0); /* one reference left */
    blob_unref(x);
    blob_unref(y);
    CHECK(released == 2);
    blob_unref(flat);
    blob_unref(other);
    blob_unref(z);
}

static void test_write_sends_every_segment(void)
{
    size_t lens[] = {17, 13, 14, 7, 12, sizeof text - 1 - 63};
    struct blob *b = cut(lens, 6);
    int fd[2];
    char buf[256];
    ssize_t n;
    CHECK(pipe(fd) == 0);
    CHECK(blob_write(b, fd[1]) == 0);
    close(fd[1]);
    n = read(fd[0], buf, sizeof buf);
    close(fd[0]);
    CHECK(n == (ssize_t)sizeof text - 1 && memcmp(buf, text, (size_t)n) == 0);
    blob_unref(b);
}

int main(void)
{
    RUN(test_segments_read_as_one_run);
    RUN(test_iov_covers_exactly_the_range);
    RUN(test_equal_by_content_however_cut);
    RUN(test_write_sends_every_segment);
    return UNIT_DONE();
}
