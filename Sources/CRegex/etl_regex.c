#include "etl_regex.h"
#include <unicode/uregex.h>

etl_regex *etl_regex_open(const uint16_t *pattern, int32_t length, int case_insensitive,
                          int32_t *status, int32_t *error_offset) {
    UErrorCode err = U_ZERO_ERROR;
    UParseError parse = {0};
    URegularExpression *re = uregex_open((const UChar *)pattern, length,
                                         case_insensitive ? UREGEX_CASE_INSENSITIVE : 0, &parse, &err);
    *status = (int32_t)err;
    *error_offset = parse.offset;
    if (U_FAILURE(err)) {
        if (re) uregex_close(re);
        return 0;
    }
    return (etl_regex *)re;
}

etl_regex *etl_regex_clone(const etl_regex *re) {
    UErrorCode err = U_ZERO_ERROR;
    URegularExpression *copy = uregex_clone((const URegularExpression *)re, &err);
    return U_FAILURE(err) ? 0 : (etl_regex *)copy;
}

void etl_regex_close(etl_regex *re) { uregex_close((URegularExpression *)re); }

int32_t etl_regex_find(etl_regex *re, const uint16_t *text, int32_t length) {
    URegularExpression *r = (URegularExpression *)re;
    UErrorCode err = U_ZERO_ERROR;
    uregex_setText(r, (const UChar *)text, length, &err);
    if (U_FAILURE(err)) return -1;
    if (!uregex_find(r, 0, &err) || U_FAILURE(err)) return -1;
    int32_t n = uregex_groupCount(r, &err);
    return U_FAILURE(err) ? -1 : n;
}

void etl_regex_group(etl_regex *re, int32_t group, int32_t *start, int32_t *end) {
    URegularExpression *r = (URegularExpression *)re;
    UErrorCode err = U_ZERO_ERROR;
    *start = uregex_start(r, group, &err);
    *end = uregex_end(r, group, &err);
    if (U_FAILURE(err)) *start = -1;
}
