/* The C client against a real local cluster of node processes, in both coordination
 * modes: blocking calls, futures (wait, poll, callbacks) shared across threads,
 * siblings and contexts, per-request R/W, and the status codes of failed requests.
 * Usage: client_test ADDRESS... */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "check.h"

static int count_siblings(dynamo_get_result *r) {
  size_t n = 0;
  OK(dynamo_get_result_count(r, &n));
  return (int)n;
}

/* Whether sibling i holds exactly `want`. */
static bool sibling_is(dynamo_get_result *r, size_t i, const char *want) {
  const uint8_t *v = NULL;
  size_t len = 0;
  bool deleted = true;
  OK(dynamo_get_result_sibling(r, i, &v, &len, &deleted));
  return !deleted && len == strlen(want) && memcmp(v, want, len) == 0;
}

static bool has_value(dynamo_get_result *r, const char *want) {
  for (int i = 0; i < count_siblings(r); i++)
    if (sibling_is(r, (size_t)i, want)) return true;
  return false;
}

static void basic(dynamo_client *c, const char *tag) {
  char key[64];
  snprintf(key, sizeof key, "c-basic-%s", tag);
  /* A key never written: no siblings, but a context. */
  dynamo_get_result *g = NULL;
  OK(dynamo_client_get(c, "default", KEY(key), 0, &g));
  CHECK(count_siblings(g) == 0, "fresh key has %d siblings", count_siblings(g));
  OK(dynamo_get_result_free(g));

  dynamo_put_result *p = NULL;
  OK(dynamo_client_put(c, "default", KEY(key), KEY("v1"), NULL, 0, &p));
  const char *ctx = NULL;
  OK(dynamo_put_result_context(p, &ctx));
  CHECK(ctx != NULL && strlen(ctx) > 0, "put gives a context");
  OK(dynamo_put_result_free(p));

  OK(dynamo_client_get(c, "default", KEY(key), 0, &g));
  CHECK(count_siblings(g) == 1 && sibling_is(g, 0, "v1"), "read back v1");
  OK(dynamo_get_result_free(g));

  /* Two blind writes become siblings; a write with the read's context resolves them. */
  OK(dynamo_client_put(c, "default", KEY(key), KEY("v2"), NULL, 0, NULL));
  OK(dynamo_client_get(c, "default", KEY(key), 3, &g)); /* R=3 override */
  CHECK(count_siblings(g) == 2, "two siblings, got %d", count_siblings(g));
  CHECK(has_value(g, "v1") && has_value(g, "v2"), "both siblings kept");
  OK(dynamo_get_result_context(g, &ctx));
  OK(dynamo_client_put(c, "default", KEY(key), KEY("merged"), ctx, 3, &p)); /* W=3 */
  OK(dynamo_get_result_free(g));
  OK(dynamo_client_get(c, "default", KEY(key), 0, &g));
  CHECK(count_siblings(g) == 1 && sibling_is(g, 0, "merged"), "context resolved siblings");
  OK(dynamo_get_result_free(g));

  /* Delete with the put's context: no values left. */
  OK(dynamo_put_result_context(p, &ctx));
  OK(dynamo_client_delete(c, "default", KEY(key), ctx, 0, NULL));
  OK(dynamo_put_result_free(p));
  OK(dynamo_client_get(c, "default", KEY(key), 0, &g));
  for (int i = 0; i < count_siblings(g); i++) {
    const uint8_t *v;
    size_t len;
    bool deleted = false;
    OK(dynamo_get_result_sibling(g, (size_t)i, &v, &len, &deleted));
    CHECK(deleted && v == NULL && len == 0, "only tombstones after delete");
  }
  OK(dynamo_get_result_free(g));

  /* A delete concurrent with a write: a tombstone sibling beside the value. */
  snprintf(key, sizeof key, "c-tomb-%s", tag);
  OK(dynamo_client_put(c, "default", KEY(key), KEY("a"), NULL, 0, &p));
  OK(dynamo_put_result_context(p, &ctx));
  OK(dynamo_client_put(c, "default", KEY(key), KEY("b"), NULL, 0, NULL));
  OK(dynamo_client_delete(c, "default", KEY(key), ctx, 0, NULL));
  OK(dynamo_put_result_free(p));
  OK(dynamo_client_get(c, "default", KEY(key), 0, &g));
  CHECK(has_value(g, "b"), "concurrent write kept");
  bool saw_tombstone = false;
  for (int i = 0; i < count_siblings(g); i++) {
    const uint8_t *v;
    size_t len;
    bool deleted = false;
    OK(dynamo_get_result_sibling(g, (size_t)i, &v, &len, &deleted));
    saw_tombstone |= deleted;
  }
  CHECK(saw_tombstone, "the delete shows as a tombstone sibling");
  OK(dynamo_get_result_free(g));
}

static void errors(dynamo_client *c) {
  dynamo_get_result *g = NULL;
  FAILS(dynamo_client_get(c, "no-such-store", KEY("k"), 0, &g), DYNAMO_ERR_UNKNOWN_STORE,
        "no-such-store");
  CHECK(g == NULL, "output untouched on failure");
  FAILS(dynamo_client_put(c, "default", KEY("k"), KEY("v"), "not-a-context", 0, NULL),
        DYNAMO_ERR_BAD_CONTEXT, "context");
  FAILS(dynamo_client_get(c, "default", KEY("k"), 9, &g), DYNAMO_ERR_BAD_REQUEST, "");
  FAILS(dynamo_client_get(c, "default", NULL, 0, 0, &g), DYNAMO_ERR_BAD_REQUEST, "key");
  /* A value over the store's max_value_size (1 MiB). */
  size_t big = (1u << 20) + 1;
  uint8_t *v = calloc(big, 1);
  FAILS(dynamo_client_put(c, "default", KEY("big"), v, big, NULL, 0, NULL),
        DYNAMO_ERR_BAD_REQUEST, "value");
  free(v);
}

/* Futures: wait, poll and callbacks, many in flight, from several threads. */
static atomic_int callbacks_done;
static atomic_int callbacks_ok;

static atomic_int wait_in_callback = -1;

/* Blocking inside a callback is refused, not a deadlock. */
static void on_get_try_wait(dynamo_future *f, void *user) {
  (void)user;
  atomic_store(&wait_in_callback, dynamo_future_wait(f));
  dynamo_future_free(f);
}

static void on_put(dynamo_future *f, void *user) {
  (void)user;
  if (dynamo_future_put_result(f, NULL) == DYNAMO_OK) atomic_fetch_add(&callbacks_ok, 1);
  dynamo_future_free(f);
  atomic_fetch_add(&callbacks_done, 1);
}

struct worker {
  dynamo_client *c;
  int id;
  int ok;
};

#define PER_THREAD 50

static void *work(void *arg) {
  struct worker *w = arg;
  dynamo_future *fs[PER_THREAD];
  char key[64], val[64];
  for (int i = 0; i < PER_THREAD; i++) {
    snprintf(key, sizeof key, "c-async-%d-%d", w->id, i);
    snprintf(val, sizeof val, "value-%d-%d", w->id, i);
    OK(dynamo_client_put_async(w->c, "default", KEY(key), KEY(val), NULL, 0, &fs[i]));
  }
  for (int i = 0; i < PER_THREAD; i++) {
    OK(dynamo_future_wait(fs[i]));
    OK(dynamo_future_put_result(fs[i], NULL));
    OK(dynamo_future_free(fs[i]));
  }
  for (int i = 0; i < PER_THREAD; i++) {
    snprintf(key, sizeof key, "c-async-%d-%d", w->id, i);
    OK(dynamo_client_get_async(w->c, "default", KEY(key), 0, &fs[i]));
  }
  for (int i = 0; i < PER_THREAD; i++) {
    /* Poll until ready (no blocking wait). */
    bool ready = false;
    for (;;) {
      OK(dynamo_future_is_ready(fs[i], &ready));
      if (ready) break;
      struct timespec ts = {0, 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    dynamo_get_result *g = NULL;
    OK(dynamo_future_get_result(fs[i], &g));
    snprintf(val, sizeof val, "value-%d-%d", w->id, i);
    if (count_siblings(g) == 1 && sibling_is(g, 0, val)) w->ok++;
    OK(dynamo_get_result_free(g));
    /* A get future is not a put future. */
    FAILS(dynamo_future_put_result(fs[i], NULL), DYNAMO_ERR_BAD_REQUEST, "get");
    OK(dynamo_future_free(fs[i]));
  }
  return NULL;
}

static void futures(dynamo_client *c) {
  enum { THREADS = 4 };
  pthread_t t[THREADS];
  struct worker w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (struct worker){c, i, 0};
    CHECK(pthread_create(&t[i], NULL, work, &w[i]) == 0, "pthread_create");
  }
  for (int i = 0; i < THREADS; i++) {
    pthread_join(t[i], NULL);
    CHECK(w[i].ok == PER_THREAD, "thread %d read back %d of %d", i, w[i].ok, PER_THREAD);
  }

  /* Callbacks: each called once, on a library thread. */
  enum { N = 100 };
  for (int i = 0; i < N; i++) {
    char key[32];
    snprintf(key, sizeof key, "c-cb-%d", i);
    dynamo_future *f = NULL;
    OK(dynamo_client_put_async(c, "default", KEY(key), KEY("x"), NULL, 0, &f));
    OK(dynamo_future_set_callback(f, on_put, NULL));
  }
  /* A callback set on a future that is ready already still runs. */
  dynamo_future *f = NULL;
  OK(dynamo_client_get_async(c, "default", KEY("c-cb-0"), 0, &f));
  OK(dynamo_future_wait(f));
  dynamo_future *late = f;
  OK(dynamo_future_set_callback(late, on_put, NULL)); /* a get: on_put sees an error */
  FAILS(dynamo_future_set_callback(late, on_put, NULL), DYNAMO_ERR_BAD_REQUEST, "callback");
  for (int spins = 0; atomic_load(&callbacks_done) < N + 1; spins++) {
    CHECK(spins < 3000, "callbacks: %d of %d ran", atomic_load(&callbacks_done), N + 1);
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  CHECK(atomic_load(&callbacks_ok) == N, "%d of %d callbacks saw success",
        atomic_load(&callbacks_ok), N);

  OK(dynamo_client_get_async(c, "default", KEY("c-cb-1"), 0, &f));
  OK(dynamo_future_set_callback(f, on_get_try_wait, NULL));
  for (int spins = 0; atomic_load(&wait_in_callback) == -1; spins++) {
    CHECK(spins < 3000, "the waiting callback never ran");
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  CHECK(atomic_load(&wait_in_callback) == DYNAMO_ERR_BAD_REQUEST,
        "dynamo_future_wait in a callback returned %d", atomic_load(&wait_in_callback));
}

/* Lists every key of the store page by page, blocking and with futures: each key
 * written here appears once, pages respect the limit, a bad cursor is refused. */
static void list_keys(dynamo_client *c, const char *tag) {
  char key[64];
  for (int i = 0; i < 40; i++) {
    snprintf(key, sizeof key, "c-list-%s-%02d", tag, i);
    OK(dynamo_client_put(c, "default", KEY(key), KEY("v"), NULL, 0, NULL));
  }
  int seen[40] = {0};
  char *cursor = NULL;
  int pages = 0;
  for (;;) {
    dynamo_key_page *page = NULL;
    if (pages % 2 == 0) {
      OK(dynamo_client_list_keys(c, "default", cursor, 7, &page));
    } else {
      dynamo_future *f = NULL;
      OK(dynamo_client_list_keys_async(c, "default", cursor, 7, &f));
      OK(dynamo_future_wait(f));
      OK(dynamo_future_key_page_result(f, &page));
      OK(dynamo_future_free(f));
    }
    pages++;
    size_t n = 0;
    OK(dynamo_key_page_count(page, &n));
    CHECK(n <= 7, "a page of limit 7 has %zu keys", n);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "c-list-%s-", tag);
    for (size_t i = 0; i < n; i++) {
      const uint8_t *k = NULL;
      size_t len = 0;
      OK(dynamo_key_page_key(page, i, &k, &len));
      size_t pl = strlen(prefix);
      if (len == pl + 2 && memcmp(k, prefix, pl) == 0) seen[(k[pl] - '0') * 10 + (k[pl + 1] - '0')]++;
    }
    const uint8_t *k = NULL;
    size_t len = 0;
    FAILS(dynamo_key_page_key(page, n, &k, &len), DYNAMO_ERR_BAD_REQUEST, "out of range");
    const char *unanswered = NULL;
    size_t missing = 99;
    OK(dynamo_key_page_unanswered(page, &unanswered, &missing));
    CHECK(missing == 0 && unanswered && unanswered[0] == '\0', "every owner answered");
    const char *next = NULL;
    OK(dynamo_key_page_next(page, &next));
    free(cursor);
    cursor = next ? strdup(next) : NULL;
    OK(dynamo_key_page_free(page));
    FAILS(dynamo_key_page_free(page), DYNAMO_ERR_BAD_REQUEST, "not live");
    if (!cursor) break;
  }
  for (int i = 0; i < 40; i++) CHECK(seen[i] == 1, "key %d listed %d times", i, seen[i]);
  dynamo_key_page *bad = NULL;
  FAILS(dynamo_client_list_keys(c, "default", "99999:zz", 10, &bad), DYNAMO_ERR_BAD_REQUEST,
        "cursor");
  FAILS(dynamo_client_list_keys(c, "nope", NULL, 10, &bad), DYNAMO_ERR_UNKNOWN_STORE,
        "unknown store");

  /* Replicas that agree: none is stale. */
  dynamo_get_result *g = NULL;
  OK(dynamo_client_get(c, "default", KEY("c-list-stale"), 3, &g));
  const char *names = NULL;
  size_t stale = 99;
  OK(dynamo_get_result_stale_replicas(g, &names, &stale));
  CHECK(stale == 0 && names && names[0] == '\0', "no stale replica, got %zu", stale);
  OK(dynamo_get_result_free(g));
}

int main(int argc, char **argv) {
  CHECK(argc >= 2, "usage: client_test ADDRESS...");
  CHECK(dynamo_api_version() == DYNAMO_API_VERSION, "header and library API versions differ");
  CHECK(strlen(dynamo_version()) > 0, "version string");
  const char **nodes = (const char **)&argv[1];
  size_t count = (size_t)(argc - 1);

  for (int mode = 0; mode < 2; mode++) {
    dynamo_client_options o;
    OK(dynamo_client_options_init(&o));
    CHECK(o.timeout_ms == 3000 && o.coordination == DYNAMO_COORDINATION_CLIENT, "defaults");
    o.coordination = mode == 0 ? DYNAMO_COORDINATION_CLIENT : DYNAMO_COORDINATION_SERVER;
    o.retries = 1;
    /* Under valgrind the client runs 20 to 50 times slower than the nodes it talks to. */
    o.timeout_ms = 30000;
    dynamo_client *c = NULL;
    OK(dynamo_client_open(nodes, count, &o, &c));
    basic(c, mode == 0 ? "client" : "server");
    list_keys(c, mode == 0 ? "client" : "server");
    errors(c);
    if (mode == 0) futures(c);
    char *json = NULL;
    OK(dynamo_client_status(c, NULL, &json));
    CHECK(strstr(json, "\"members\"") != NULL, "status JSON: %s", json);
    OK(dynamo_free(json));
    dynamo_future *sf = NULL;
    OK(dynamo_client_status_async(c, nodes[0], &sf));
    OK(dynamo_future_wait(sf));
    json = NULL;
    OK(dynamo_future_json_result(sf, &json));
    CHECK(strstr(json, "\"members\"") != NULL, "async status JSON: %s", json);
    OK(dynamo_free(json));
    dynamo_get_result *wrong = NULL;
    FAILS(dynamo_future_get_result(sf, &wrong), DYNAMO_ERR_BAD_REQUEST, "not a get");
    OK(dynamo_future_free(sf));
    OK(dynamo_client_close(c));
  }
  printf("client_test: ok\n");
  return 0;
}
