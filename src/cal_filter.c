/*
 * cal_filter.c — the user's filter options: match=PROP~REGEX and the dates
 * of after= and before= (SPEC §1). Bad syntax is reported in err so the
 * mount can fail with a message naming the problem.
 */
#include "cal_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cal_filter_add_match(struct cal_filter *f, const char *spec, char *err, size_t errlen)
{
    const char *tilde = spec ? strchr(spec, '~') : NULL;
    if (!tilde) {
        snprintf(err, errlen, "match filter \"%s\" is not PROP~REGEX", spec ? spec : "");
        return -EINVAL;
    }
    size_t n = (size_t)(tilde - spec);
    struct cal_match m;
    memset(&m, 0, sizeof m);
    if (n == 0 || n >= sizeof m.property) {
        snprintf(err, errlen, "match filter \"%s\": property name must be 1 to %zu characters",
                 spec, sizeof m.property - 1);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        char c = spec[i];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) {
            snprintf(err, errlen, "match filter \"%s\": \"%.*s\" is not a property name", spec,
                     (int)n, spec);
            return -EINVAL;
        }
        m.property[i] = c;
    }
    if (!tilde[1]) {
        snprintf(err, errlen, "match filter \"%s\": empty regular expression", spec);
        return -EINVAL;
    }
    if (f->nmatch >= CAL_MATCH_MAX) {
        snprintf(err, errlen, "more than %d match filters", CAL_MATCH_MAX);
        return -EINVAL;
    }
    int rc = regcomp(&m.re, tilde + 1, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char why[128];
        regerror(rc, &m.re, why, sizeof why);
        snprintf(err, errlen, "match filter \"%s\": %s", spec, why);
        return -EINVAL;
    }
    struct cal_match *a = realloc(f->match, (f->nmatch + 1) * sizeof *a);
    if (a)
        f->match = a;
    if (!a || !(m.spec = strdup(spec))) {
        regfree(&m.re);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    a[f->nmatch++] = m;
    return 0;
}

/* Reads exactly `digits` decimal digits. */
static int cal_num(const char **s, int digits, int *out)
{
    int v = 0;
    for (int i = 0; i < digits; i++) {
        char c = (*s)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *s += digits;
    *out = v;
    return 0;
}

static int cal_days_in_month(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : d[m - 1];
}

int cal_parse_date(const char *s, int64_t *out)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, off = 0;
    if (!s || cal_num(&s, 4, &y) < 0 || *s++ != '-' || cal_num(&s, 2, &mo) < 0 || *s++ != '-' ||
        cal_num(&s, 2, &d) < 0)
        return -EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > cal_days_in_month(y, mo))
        return -EINVAL;
    if (*s) {
        /* RFC 3339 §5.6 date-time: 'T' (or 't', or a space), time, offset. */
        if (*s != 'T' && *s != 't' && *s != ' ')
            return -EINVAL;
        s++;
        if (cal_num(&s, 2, &h) < 0 || *s++ != ':' || cal_num(&s, 2, &mi) < 0 || *s++ != ':' ||
            cal_num(&s, 2, &sec) < 0)
            return -EINVAL;
        if (h > 23 || mi > 59 || sec > 60)
            return -EINVAL;
        if (*s == '.') {
            s++;
            if (*s < '0' || *s > '9')
                return -EINVAL;
            while (*s >= '0' && *s <= '9')
                s++; /* fractions of a second do not matter here */
        }
        if (*s == 'Z' || *s == 'z') {
            s++;
        } else if (*s == '+' || *s == '-') {
            int sign = *s++ == '-' ? -1 : 1, oh, om;
            if (cal_num(&s, 2, &oh) < 0 || *s++ != ':' || cal_num(&s, 2, &om) < 0 || oh > 23 ||
                om > 59)
                return -EINVAL;
            off = sign * (oh * 3600 + om * 60);
        } else {
            return -EINVAL;
        }
        if (*s)
            return -EINVAL;
    }
    if (sec == 60)
        sec = 59; /* a leap second: close enough for a filter */
    *out =
        cal_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec - off;
    return 0;
}

void cal_filter_free(struct cal_filter *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nmatch; i++) {
        regfree(&f->match[i].re);
        free(f->match[i].spec);
    }
    free(f->match);
    f->match = NULL;
    f->nmatch = 0;
}
