// A narrow C face over ICU's regular expressions (Debian libicu-dev), for the uap-core
// user-agent rules: match a UTF-16 buffer in place, read group offsets. ICU's own headers stay
// inside etl_regex.c, so they never meet the copy of ICU that Foundation carries.
#pragma once
#include <stdint.h>

typedef struct etl_regex etl_regex;

/// Compiles `pattern`; NULL on error, with ICU's status and the error's offset in the pattern.
etl_regex *etl_regex_open(const uint16_t *pattern, int32_t length, int case_insensitive,
                          int32_t *status, int32_t *error_offset);
/// A copy that can match on another thread (the compiled pattern is shared).
etl_regex *etl_regex_clone(const etl_regex *re);
void etl_regex_close(etl_regex *re);
/// Searches `text` (which must outlive the call); the number of groups on a match, -1 otherwise.
int32_t etl_regex_find(etl_regex *re, const uint16_t *text, int32_t length);
/// After a match: group `group`'s UTF-16 offsets; *start = -1 when it did not take part.
void etl_regex_group(etl_regex *re, int32_t group, int32_t *start, int32_t *end);
