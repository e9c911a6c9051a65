/* The local storage framework from C: every built-in engine by spec, with keyspaces,
 * get/put/delete, atomic batches, bounded range iterators both ways, sync, size, close,
 * and reopening durable engines. Usage: engine_test DIR */
#include <stdbool.h>
#include <stdint.h>

#include "check.h"

static void expect(dynamo_engine *e, const char *ks, const char *key, const char *want) {
  uint8_t *v = (uint8_t *)1;
  size_t len = 7;
  bool found = true;
  OK(dynamo_engine_get(e, ks, KEY(key), &v, &len, &found));
  if (want == NULL) {
    CHECK(!found && v == NULL && len == 0, "%s/%s should be absent", ks, key);
    return;
  }
  CHECK(found && len == strlen(want) && memcmp(v, want, len) == 0, "%s/%s should be %s", ks,
        key, want);
  OK(dynamo_free(v));
}

/* Scans `ks` over `r` and checks the keys seen, in order, joined by ','. */
static void scan_is(dynamo_engine *e, const char *ks, const dynamo_range *r, bool reverse,
                    const char *want) {
  dynamo_iter *it = NULL;
  OK(dynamo_engine_scan(e, ks, r, reverse, &it));
  char got[512] = "";
  for (;;) {
    bool has = false;
    const uint8_t *k, *v;
    size_t kl, vl;
    OK(dynamo_iter_next(it, &has, &k, &kl, &v, &vl));
    if (!has) break;
    if (got[0]) strcat(got, ",");
    strncat(got, (const char *)k, kl);
  }
  OK(dynamo_iter_free(it));
  CHECK(strcmp(got, want) == 0, "scan got [%s], expected [%s]", got, want);
}

static void exercise(const char *spec, const char *dir) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, spec);
  for (char *p = path + strlen(dir); *p; p++)
    if (*p == ':') *p = '_';
  dynamo_engine *e = NULL;
  OK(dynamo_engine_open(spec, path, &e));
  OK(dynamo_engine_ensure_keyspace(e, "fruit"));
  OK(dynamo_engine_ensure_keyspace(e, "veg"));
  FAILS(dynamo_engine_put(e, "nope", KEY("k"), KEY("v")), DYNAMO_ERR_BAD_REQUEST, "nope");
  char *ks_list = NULL;
  size_t n_ks = 0;
  OK(dynamo_engine_keyspaces(e, &ks_list, &n_ks));
  CHECK(n_ks == 2 && strcmp(ks_list, "fruit\nveg\n") == 0, "keyspaces: %zu [%s]", n_ks,
        ks_list);
  OK(dynamo_free(ks_list));

  OK(dynamo_engine_put(e, "fruit", KEY("apple"), KEY("red")));
  OK(dynamo_engine_put(e, "veg", KEY("apple"), KEY("not a veg")));
  expect(e, "fruit", "apple", "red");
  expect(e, "veg", "apple", "not a veg");
  OK(dynamo_engine_delete(e, "veg", KEY("apple")));
  expect(e, "veg", "apple", NULL);
  expect(e, "fruit", "apple", "red");
  /* Empty values and binary keys. */
  OK(dynamo_engine_put(e, "veg", (const uint8_t *)"\0\xff", 2, NULL, 0));
  uint8_t *v;
  size_t len;
  bool found;
  OK(dynamo_engine_get(e, "veg", (const uint8_t *)"\0\xff", 2, &v, &len, &found));
  CHECK(found && len == 0, "empty value under a binary key");
  OK(dynamo_free(v));

  /* An atomic batch across keyspaces. */
  dynamo_batch *b = NULL;
  OK(dynamo_batch_new(&b));
  const char *names[] = {"banana", "cherry", "date", "elder", "fig"};
  for (int i = 0; i < 5; i++) OK(dynamo_batch_put(b, "fruit", KEY(names[i]), KEY("yes")));
  OK(dynamo_batch_delete(b, "fruit", KEY("apple")));
  OK(dynamo_batch_delete(b, "veg", (const uint8_t *)"\0\xff", 2));
  size_t count = 0;
  OK(dynamo_batch_count(b, &count));
  CHECK(count == 7, "batch has %zu ops", count);
  OK(dynamo_engine_write(e, b));
  OK(dynamo_batch_clear(b));
  OK(dynamo_batch_count(b, &count));
  CHECK(count == 0, "cleared batch has %zu ops", count);
  /* A batch naming an unknown keyspace is refused whole. */
  OK(dynamo_batch_put(b, "fruit", KEY("grape"), KEY("yes")));
  OK(dynamo_batch_put(b, "nope", KEY("x"), KEY("y")));
  CHECK(dynamo_engine_write(e, b) != DYNAMO_OK, "batch with an unknown keyspace fails");
  expect(e, "fruit", "grape", NULL);
  OK(dynamo_batch_free(b));
  expect(e, "fruit", "apple", NULL);
  expect(e, "fruit", "cherry", "yes");

  /* Range scans with every kind of bound, both ways. */
  scan_is(e, "fruit", NULL, false, "banana,cherry,date,elder,fig");
  scan_is(e, "fruit", NULL, true, "fig,elder,date,cherry,banana");
  dynamo_range r = {KEY("cherry"), DYNAMO_BOUND_INCLUDED, KEY("elder"), DYNAMO_BOUND_EXCLUDED};
  scan_is(e, "fruit", &r, false, "cherry,date");
  scan_is(e, "fruit", &r, true, "date,cherry");
  r.start_bound = DYNAMO_BOUND_EXCLUDED;
  r.end_bound = DYNAMO_BOUND_INCLUDED;
  scan_is(e, "fruit", &r, false, "date,elder");
  r.start_bound = DYNAMO_BOUND_UNBOUNDED;
  scan_is(e, "fruit", &r, true, "elder,date,cherry,banana");
  r.start_bound = 7;
  dynamo_iter *it = NULL;
  FAILS(dynamo_engine_scan(e, "fruit", &r, false, &it), DYNAMO_ERR_BAD_REQUEST, "bound");
  scan_is(e, "veg", NULL, false, "");

  /* Many keys: iteration crosses the library's internal chunks in order. */
  b = NULL;
  OK(dynamo_batch_new(&b));
  for (int i = 0; i < 1000; i++) {
    char key[16];
    snprintf(key, sizeof key, "n%04d", i);
    OK(dynamo_batch_put(b, "veg", KEY(key), KEY("v")));
  }
  OK(dynamo_engine_write(e, b));
  OK(dynamo_batch_free(b));
  OK(dynamo_engine_scan(e, "veg", NULL, true, &it));
  int seen = 0;
  for (;;) {
    bool has;
    const uint8_t *k, *val;
    size_t kl, vl;
    OK(dynamo_iter_next(it, &has, &k, &kl, &val, &vl));
    if (!has) break;
    char want[16];
    snprintf(want, sizeof want, "n%04d", 999 - seen);
    CHECK(kl == 5 && memcmp(k, want, 5) == 0, "reverse key %d", seen);
    seen++;
  }
  OK(dynamo_iter_free(it));
  CHECK(seen == 1000, "saw %d of 1000 keys", seen);
  dynamo_range all = {NULL, 0, DYNAMO_BOUND_UNBOUNDED, NULL, 0, DYNAMO_BOUND_UNBOUNDED};
  OK(dynamo_engine_delete_range(e, "veg", &all));
  scan_is(e, "veg", NULL, false, "");

  OK(dynamo_engine_sync(e));
  uint64_t size = 0;
  OK(dynamo_engine_approximate_size(e, &size));
  OK(dynamo_engine_close(e));
  FAILS(dynamo_engine_close(e), DYNAMO_ERR_BAD_REQUEST, "not live");
  FAILS(dynamo_engine_put(e, "fruit", KEY("k"), KEY("v")), DYNAMO_ERR_BAD_REQUEST, "not live");

  if (strcmp(spec, "memory") != 0) {
    OK(dynamo_engine_open(spec, path, &e));
    expect(e, "fruit", "cherry", "yes");
    expect(e, "fruit", "apple", NULL);
    OK(dynamo_engine_close(e));
  }
  printf("engine_test: %s ok\n", spec);
}

int main(int argc, char **argv) {
  CHECK(argc == 2, "usage: engine_test DIR");
  const char *specs[] = {"rocksdb", "sqlite", "memory", "buffered:rocksdb", "buffered:sqlite"};
  for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) exercise(specs[i], argv[1]);
  dynamo_engine *e = NULL;
  FAILS(dynamo_engine_open("leveldb", argv[1], &e), DYNAMO_ERR_BAD_REQUEST, "leveldb");
  printf("engine_test: ok\n");
  return 0;
}
