/*
 * test_fsops_inode.c — node ids per version of a path (src/fsops_inode.c).
 */
#include <stdio.h>
#include <string.h>

#include "fsops_inode.h"
#include "unit.h"

static struct store_attr file_attr(const struct blob *b, int64_t mtime)
{
    struct store_attr a = {.kind = STORE_FILE, .size = b->len, .mtime = mtime, .ino = 77};

    return a;
}

static void test_same_version_same_node(void)
{
    struct fsino_table *t = fsino_table_new();
    struct blob *b = blob_new("BEGIN:VCALENDAR", 15), *copy = blob_new("BEGIN:VCALENDAR", 15);
    struct store_attr a = file_attr(b, 100);
    struct fsino *n1 = fsino_lookup(t, "/a.ics", &a, b);
    struct fsino *n2 = fsino_lookup(t, "/a.ics", &a, b);
    /* A re-render with the same bytes in another buffer is the same version. */
    struct fsino *n3 = fsino_lookup(t, "/a.ics", &a, copy);

    CHECK(n1 && n1 == n2 && n2 == n3);
    CHECK(n1->nodeid >= 2 && n1->size == 15 && n1->nlookup == 3);
    CHECK(fsino_count(t) == 2);
    fsino_put(t, n1);
    fsino_put(t, n2);
    fsino_put(t, n3);
    fsino_forget(t, n1->nodeid, 3);
    CHECK(fsino_count(t) == 1);
    blob_unref(b);
    blob_unref(copy);
    fsino_table_free(t);
}

static void test_new_bytes_new_node_old_one_lives_while_open(void)
{
    struct fsino_table *t = fsino_table_new();
    struct blob *v1 = blob_new("one", 3), *v2 = blob_new("three", 5), *held;
    struct store_attr a1 = file_attr(v1, 100), a2 = file_attr(v2, 200);
    struct fsino *old = fsino_lookup(t, "/d/e.ics", &a1, v1), *open, *cur;
    uint64_t old_id = old->nodeid, ino = 0;

    fsino_put(t, old);
    open = fsino_get(t, old_id); /* an open file's reference */
    cur = fsino_lookup(t, "/d/e.ics", &a2, v2);
    CHECK(cur && cur->nodeid != old_id && cur->nodeid > old_id);
    CHECK(cur->size == 5 && open->size == 3);
    CHECK(cur->ino != open->ino);
    CHECK(fsino_current(t, "/d/e.ics", &ino, NULL) == cur->nodeid && ino == cur->ino);
    /* The kernel forgets the old node: it stays while the file is open. */
    fsino_forget(t, old_id, 1);
    CHECK(fsino_get(t, old_id) == open);
    fsino_put(t, open);
    held = fsino_bytes(t, open);
    CHECK(held == v1);
    blob_unref(held);
    fsino_put(t, open); /* closed */
    CHECK(fsino_get(t, old_id) == NULL);
    CHECK(fsino_count(t) == 2);
    fsino_put(t, cur);
    blob_unref(v1);
    blob_unref(v2);
    fsino_table_free(t);
}

static void test_many_syncs_do_not_grow_the_table(void)
{
    struct fsino_table *t = fsino_table_new();
    uint64_t last = 0;
    int increasing = 1;

    for (int i = 0; i < 20000; i++) {
        char text[64];
        int len = snprintf(text, sizeof text, "version %d%*s", i, i % 7, "");
        struct blob *b = blob_new(text, (size_t)len);
        struct store_attr a = file_attr(b, i);
        struct fsino *n = fsino_lookup(t, i % 2 ? "/x/merged.ics" : "/merged.ics", &a, b);

        increasing &= n->nodeid > last;
        last = n->nodeid;
        fsino_put(t, n);
        blob_unref(b);
        /* The kernel drops the old name and forgets the old node. */
        if (i >= 2) {
            fsino_forget(t, last - 2, 1);
            CHECK(fsino_count(t) <= 4);
        }
    }
    CHECK(increasing);
    fsino_forget(t, last - 1, 1);
    fsino_forget(t, last, 1);
    CHECK(fsino_count(t) == 1);
    fsino_table_free(t);
}

static void test_directories_keep_one_node(void)
{
    struct fsino_table *t = fsino_table_new();
    struct store_attr d1 = {.kind = STORE_DIR, .mtime = 1, .ino = 5};
    struct store_attr d2 = {.kind = STORE_DIR, .mtime = 2, .ino = 5};
    struct blob *b = blob_new("x", 1);
    struct store_attr f = file_attr(b, 3);
    struct fsino *n1 = fsino_lookup(t, "/Calendars", &d1, NULL);
    struct fsino *n2 = fsino_lookup(t, "/Calendars", &d2, NULL);
    struct fsino *n3 = fsino_lookup(t, "/Calendars", &f, b); /* now a file by that name */
    struct fsino *root;
    enum store_kind kind = STORE_DIR;

    CHECK(n1 == n2 && n1->ino == 5);
    CHECK(n3 != n1 && n3->kind == STORE_FILE);
    CHECK(fsino_current(t, "/Calendars", NULL, &kind) == n3->nodeid && kind == STORE_FILE);
    CHECK(fsino_current(t, "/", NULL, &kind) == FSINO_ROOT && kind == STORE_DIR);
    CHECK(fsino_current(t, "/nothing", NULL, NULL) == 0);
    CHECK(fsino_get(t, 9999) == NULL);
    fsino_put(t, n1);
    fsino_put(t, n2);
    fsino_put(t, n3);
    fsino_forget(t, FSINO_ROOT, 1); /* the root never goes */
    root = fsino_get(t, FSINO_ROOT);
    CHECK(root != NULL);
    fsino_put(t, root);
    blob_unref(b);
    fsino_table_free(t); /* frees what the kernel still holds */
}

static void test_version_ino(void)
{
    struct store_attr a = {.kind = STORE_FILE, .size = 10, .mtime = 5, .ino = 42};
    struct store_attr b = a, d = {.kind = STORE_DIR, .ino = 42};
    uint64_t ia = fsino_version_ino(&a);

    b.size = 11;
    CHECK(ia == fsino_version_ino(&a));
    CHECK(ia != fsino_version_ino(&b));
    b.size = 10;
    b.mtime = 6;
    CHECK(ia != fsino_version_ino(&b));
    CHECK(ia > 1);
    CHECK(fsino_version_ino(&d) == 42);
}

int main(void)
{
    RUN(test_same_version_same_node);
    RUN(test_new_bytes_new_node_old_one_lives_while_open);
    RUN(test_many_syncs_do_not_grow_the_table);
    RUN(test_directories_keep_one_node);
    RUN(test_version_ino);
    return UNIT_DONE();
}
