/* Assertion helpers for the C tests: every failure prints where and why, then exits 1. */
#ifndef DYNAMO_TEST_CHECK_H
#define DYNAMO_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo.h"

#define FAIL(...)                                             \
  do {                                                        \
    fprintf(stderr, "%s:%d: FAILED: ", __FILE__, __LINE__);   \
    fprintf(stderr, __VA_ARGS__);                             \
    fprintf(stderr, "\n");                                    \
    exit(1);                                                  \
  } while (0)

/* The call must succeed. */
#define OK(call)                                                                   \
  do {                                                                             \
    dynamo_status st_ = (call);                                                    \
    if (st_ != DYNAMO_OK)                                                          \
      FAIL("%s returned %d (%s): %s", #call, st_, dynamo_status_name(st_),        \
           dynamo_last_error_message());                                           \
  } while (0)

/* The call must fail with `code` and leave a message containing `needle`. */
#define FAILS(call, code, needle)                                                  \
  do {                                                                             \
    dynamo_status st_ = (call);                                                    \
    if (st_ != (code))                                                             \
      FAIL("%s returned %d (%s), expected %d (%s); message: %s", #call, st_,      \
           dynamo_status_name(st_), (code), dynamo_status_name(code),             \
           dynamo_last_error_message());                                           \
    if (strstr(dynamo_last_error_message(), (needle)) == NULL)                     \
      FAIL("%s: message %s does not mention \"%s\"", #call,                       \
           dynamo_last_error_message(), (needle));                                 \
  } while (0)

#define CHECK(cond, ...)          \
  do {                            \
    if (!(cond)) FAIL(__VA_ARGS__); \
  } while (0)

#define KEY(s) (const uint8_t *)(s), strlen(s)

#endif
