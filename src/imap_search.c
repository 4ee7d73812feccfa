/*
 * imap_search.c — the search= option: IMAP SEARCH keys (RFC 3501 §6.4.4)
 * as the user writes them, turned into libetpan's search key tree.
 *
 * libetpan cannot send a raw search string, so the keys are parsed here:
 * words, "quoted strings", dates as d-Mon-yyyy, NOT k, OR k1 k2, and
 * (k1 k2 ...) groups. A key we do not know is an error at mount time, not a
 * search the server would reject later.
 */
#include <errno.h>
#include <libetpan/libetpan.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_internal.h"

#define SEARCH_MAX_DEPTH 16

struct lexer {
    const char *p;
    char *err;
    size_t errlen;
    int depth;
};

/* The next token (a word, a quoted string, "(" or ")"), malloc'd; NULL at the end. */
static char *next_token(struct lexer *lx, int *quoted)
{
    const char *start;
    char *tok;
    size_t n = 0;

    *quoted = 0;
    while (*lx->p == ' ' || *lx->p == '\t')
        lx->p++;
    if (*lx->p == '\0')
        return NULL;
    if (*lx->p == '(' || *lx->p == ')')
        return strndup(lx->p++, 1);
    if (*lx->p != '"') {
        start = lx->p;
        while (*lx->p && !strchr(" \t()", *lx->p))
            lx->p++;
        return strndup(start, (size_t)(lx->p - start));
    }
    *quoted = 1;
    if ((tok = malloc(strlen(lx->p) + 1)) == NULL)
        return NULL;
    for (lx->p++; *lx->p && *lx->p != '"'; lx->p++) {
        if (*lx->p == '\\' && lx->p[1])
            lx->p++;
        tok[n++] = *lx->p;
    }
    if (*lx->p == '"')
        lx->p++;
    tok[n] = '\0';
    return tok;
}

static char *need_arg(struct lexer *lx, const char *key)
{
    int quoted;
    char *arg = next_token(lx, &quoted);

    if (arg == NULL || (!quoted && (strcmp(arg, "(") == 0 || strcmp(arg, ")") == 0))) {
        snprintf(lx->err, lx->errlen, "search=: %s needs an argument", key);
        free(arg);
        return NULL;
    }
    return arg;
}

/* d-Mon-yyyy (RFC 3501 date) → a libetpan date. */
static struct mailimap_date *parse_date(struct lexer *lx, const char *key)
{
    static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char *arg = need_arg(lx, key), mon[4] = "";
    int day = 0, year = 0, m;
    struct mailimap_date *d = NULL;

    if (arg == NULL)
        return NULL;
    if (sscanf(arg, "%2d-%3[A-Za-z]-%4d", &day, mon, &year) == 3)
        for (m = 0; m < 12; m++)
            if (strcasecmp(mon, months[m]) == 0 && day >= 1 && day <= 31 && year > 1900)
                d = mailimap_date_new(day, m + 1, year);
    if (d == NULL)
        snprintf(lx->err, lx->errlen, "search=: %s %s: not a date like 1-Jan-2026", key, arg);
    free(arg);
    return d;
}

static struct mailimap_search_key *parse_key(struct lexer *lx, char *tok);

/* One key, reading its arguments; NULL with lx->err set on error. */
static struct mailimap_search_key *parse_next(struct lexer *lx)
{
    int quoted;
    char *tok = next_token(lx, &quoted);

    if (tok == NULL) {
        snprintf(lx->err, lx->errlen, "search=: a key is missing at the end");
        return NULL;
    }
    return parse_key(lx, tok);
}

static struct mailimap_search_key *string_key(struct lexer *lx, const char *name,
                                              struct mailimap_search_key *(*make)(char *))
{
    char *arg = need_arg(lx, name);
    struct mailimap_search_key *k;

    if (arg == NULL)
        return NULL;
    if ((k = make(arg)) == NULL)
        free(arg);
    return k;
}

static struct mailimap_search_key *
date_key(struct lexer *lx, const char *name,
         struct mailimap_search_key *(*make)(struct mailimap_date *))
{
    struct mailimap_date *d = parse_date(lx, name);
    struct mailimap_search_key *k;

    if (d == NULL)
        return NULL;
    if ((k = make(d)) == NULL)
        mailimap_date_free(d);
    return k;
}

static struct mailimap_search_key *flag_key(int type)
{
    return mailimap_search_key_new(type, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                   NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0,
                                   NULL, NULL, NULL);
}

static struct mailimap_search_key *group_key(struct lexer *lx)
{
    clist *list = clist_new();
    struct mailimap_search_key *k;
    int quoted;

    if (list == NULL)
        return NULL;
    for (;;) {
        const char *save = lx->p;
        char *tok = next_token(lx, &quoted);

        if (tok == NULL) {
            snprintf(lx->err, lx->errlen, "search=: '(' without ')'");
            goto fail;
        }
        if (!quoted && strcmp(tok, ")") == 0) {
            free(tok);
            break;
        }
        free(tok);
        lx->p = save;
        if ((k = parse_next(lx)) == NULL || clist_append(list, k) != 0) {
            if (k)
                mailimap_search_key_free(k);
            goto fail;
        }
    }
    if ((k = mailimap_search_key_new_multiple(list)) != NULL)
        return k;
fail:
    for (clistiter *it = clist_begin(list); it; it = clist_next(it))
        mailimap_search_key_free(clist_content(it));
    clist_free(list);
    return NULL;
}

static const struct {
    const char *name;
    int type;
} flag_keys[] = {
    {"ALL", MAILIMAP_SEARCH_KEY_ALL},
    {"ANSWERED", MAILIMAP_SEARCH_KEY_ANSWERED},
    {"DELETED", MAILIMAP_SEARCH_KEY_DELETED},
    {"FLAGGED", MAILIMAP_SEARCH_KEY_FLAGGED},
    {"NEW", MAILIMAP_SEARCH_KEY_NEW},
    {"OLD", MAILIMAP_SEARCH_KEY_OLD},
    {"RECENT", MAILIMAP_SEARCH_KEY_RECENT},
    {"SEEN", MAILIMAP_SEARCH_KEY_SEEN},
    {"UNANSWERED", MAILIMAP_SEARCH_KEY_UNANSWERED},
    {"UNDELETED", MAILIMAP_SEARCH_KEY_UNDELETED},
    {"UNFLAGGED", MAILIMAP_SEARCH_KEY_UNFLAGGED},
    {"UNSEEN", MAILIMAP_SEARCH_KEY_UNSEEN},
    {"DRAFT", MAILIMAP_SEARCH_KEY_DRAFT},
    {"UNDRAFT", MAILIMAP_SEARCH_KEY_UNDRAFT},
};

static const struct {
    const char *name;
    struct mailimap_search_key *(*make)(char *);
} string_keys[] = {
    {"BCC", mailimap_search_key_new_bcc},
    {"BODY", mailimap_search_key_new_body},
    {"CC", mailimap_search_key_new_cc},
    {"FROM", mailimap_search_key_new_from},
    {"KEYWORD", mailimap_search_key_new_keyword},
    {"SUBJECT", mailimap_search_key_new_subject},
    {"TEXT", mailimap_search_key_new_text},
    {"TO", mailimap_search_key_new_to},
    {"UNKEYWORD", mailimap_search_key_new_unkeyword},
};

static const struct {
    const char *name;
    struct mailimap_search_key *(*make)(struct mailimap_date *);
} date_keys[] = {
    {"BEFORE", mailimap_search_key_new_before}, {"ON", mailimap_search_key_new_on},
    {"SINCE", mailimap_search_key_new_since},   {"SENTBEFORE", mailimap_search_key_new_sentbefore},
    {"SENTON", mailimap_search_key_new_senton}, {"SENTSINCE", mailimap_search_key_new_sentsince},
};

static struct mailimap_search_key *compound_key(struct lexer *lx, const char *tok)
{
    struct mailimap_search_key *a, *b, *k = NULL;

    if (strcasecmp(tok, "NOT") == 0) {
        if ((a = parse_next(lx)) != NULL && (k = mailimap_search_key_new_not(a)) == NULL)
            mailimap_search_key_free(a);
        return k;
    }
    /* OR */
    if ((a = parse_next(lx)) == NULL)
        return NULL;
    if ((b = parse_next(lx)) == NULL) {
        mailimap_search_key_free(a);
        return NULL;
    }
    if ((k = mailimap_search_key_new_or(a, b)) == NULL) {
        mailimap_search_key_free(a);
        mailimap_search_key_free(b);
    }
    return k;
}

/* tok (consumed) and what it needs after it. */
static struct mailimap_search_key *parse_key(struct lexer *lx, char *tok)
{
    struct mailimap_search_key *k = NULL;
    size_t i;

    if (++lx->depth > SEARCH_MAX_DEPTH) {
        snprintf(lx->err, lx->errlen, "search=: nested too deep");
        goto out;
    }
    if (strcmp(tok, "(") == 0) {
        k = group_key(lx);
        goto out;
    }
    if (strcasecmp(tok, "NOT") == 0 || strcasecmp(tok, "OR") == 0) {
        k = compound_key(lx, tok);
        goto out;
    }
    for (i = 0; i < sizeof flag_keys / sizeof flag_keys[0]; i++)
        if (strcasecmp(tok, flag_keys[i].name) == 0) {
            k = flag_key(flag_keys[i].type);
            goto out;
        }
    for (i = 0; i < sizeof string_keys / sizeof string_keys[0]; i++)
        if (strcasecmp(tok, string_keys[i].name) == 0) {
            k = string_key(lx, string_keys[i].name, string_keys[i].make);
            goto out;
        }
    for (i = 0; i < sizeof date_keys / sizeof date_keys[0]; i++)
        if (strcasecmp(tok, date_keys[i].name) == 0) {
            k = date_key(lx, date_keys[i].name, date_keys[i].make);
            goto out;
        }
    if (strcasecmp(tok, "HEADER") == 0) {
        char *field = need_arg(lx, "HEADER"), *value = field ? need_arg(lx, "HEADER") : NULL;

        if (value && (k = mailimap_search_key_new_header(field, value)) != NULL)
            goto out;
        free(field);
        free(value);
        goto out;
    }
    if (strcasecmp(tok, "LARGER") == 0 || strcasecmp(tok, "SMALLER") == 0) {
        char *arg = need_arg(lx, tok), *end = NULL;
        unsigned long n = arg ? strtoul(arg, &end, 10) : 0;

        if (arg && *end == '\0' && end != arg && n <= UINT32_MAX)
            k = strcasecmp(tok, "LARGER") == 0 ? mailimap_search_key_new_larger((uint32_t)n)
                                               : mailimap_search_key_new_smaller((uint32_t)n);
        else if (arg)
            snprintf(lx->err, lx->errlen, "search=: %s %s: not a number", tok, arg);
        free(arg);
        goto out;
    }
    snprintf(lx->err, lx->errlen, "search=: unknown search key '%s'", tok);
out:
    lx->depth--;
    free(tok);
    return k;
}

int imap_search_key(const char *keys, struct mailimap_search_key **out, char *err, size_t errlen)
{
    struct lexer lx = {.p = keys ? keys : "", .err = err, .errlen = errlen};
    clist *list;
    int quoted;

    err[0] = '\0';
    if (keys == NULL || keys[strspn(keys, " \t")] == '\0') {
        *out = mailimap_search_key_new_all();
        return *out ? 0 : -ENOMEM;
    }
    if ((list = clist_new()) == NULL)
        return -ENOMEM;
    /* Several keys side by side mean AND (RFC 3501 §6.4.4). */
    for (;;) {
        const char *save = lx.p;
        char *tok = next_token(&lx, &quoted);
        struct mailimap_search_key *k;

        if (tok == NULL)
            break;
        free(tok);
        lx.p = save;
        if ((k = parse_next(&lx)) == NULL || clist_append(list, k) != 0) {
            if (k)
                mailimap_search_key_free(k);
            for (clistiter *it = clist_begin(list); it; it = clist_next(it))
                mailimap_search_key_free(clist_content(it));
            clist_free(list);
            return err[0] ? -EINVAL : -ENOMEM;
        }
    }
    if ((*out = mailimap_search_key_new_multiple(list)) == NULL) {
        for (clistiter *it = clist_begin(list); it; it = clist_next(it))
            mailimap_search_key_free(clist_content(it));
        clist_free(list);
        return -ENOMEM;
    }
    return 0;
}
