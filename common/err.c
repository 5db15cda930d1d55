/* The error table's accessors; see err.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include "err.h"

struct err_row {
    const char *code;
    unsigned status;
    const char *message;
};

static const struct err_row err_rows[] = {
#define AD_ERR_ROW(e, code, status, msg) {code, status, msg},
    AD_ERR_MAP(AD_ERR_ROW)
#undef AD_ERR_ROW
};

static const struct err_row *err_row_of(ad_err e)
{
    if ((unsigned)e >= AD_ERR__COUNT)
        e = AD_EINTERNAL;
    return &err_rows[e];
}

const char *ad_err_code(ad_err e) { return err_row_of(e)->code; }
unsigned ad_err_status(ad_err e) { return err_row_of(e)->status; }
const char *ad_err_message(ad_err e) { return err_row_of(e)->message; }

ad_err ad_errf(ad_err e, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return e;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return e;
}
