/* Misuse never crashes: NULL arguments, double free and close, closed handles, made-up
 * handles, invalid UTF-8, oversize values, a panic inside the library. Each returns an
 * error code with a message, leaves outputs untouched, and the library stays usable.
 * Usage: misuse_test ADDRESS DIR */
#include <stdbool.h>
#include <stdint.h>

#include "check.h"

int main(int argc, char **argv) {
  CHECK(argc == 3, "usage: misuse_test ADDRESS DIR");
  const char *addr = argv[1];

  /* NULL arguments. */
  dynamo_client *c = NULL;
  FAILS(dynamo_client_open(NULL, 1, NULL, &c), DYNAMO_ERR_BAD_REQUEST, "no node");
  FAILS(dynamo_client_open(&addr, 0, NULL, &c), DYNAMO_ERR_BAD_REQUEST, "no node");
  FAILS(dynamo_client_open(&addr, 1, NULL, NULL), DYNAMO_ERR_BAD_REQUEST, "client");
  const char *null_addr = NULL;
  FAILS(dynamo_client_open(&null_addr, 1, NULL, &c), DYNAMO_ERR_BAD_REQUEST, "nodes[0]");
  CHECK(c == NULL, "outputs untouched on failure");
  dynamo_client_options o;
  OK(dynamo_client_options_init(&o));
  o.coordination = 42;
  FAILS(dynamo_client_open(&addr, 1, &o, &c), DYNAMO_ERR_BAD_REQUEST, "coordination");
  FAILS(dynamo_client_options_init(NULL), DYNAMO_ERR_BAD_REQUEST, "options");
  FAILS(dynamo_client_get(NULL, "default", KEY("k"), 0, NULL), DYNAMO_ERR_BAD_REQUEST, "NULL");

  OK(dynamo_client_open(&addr, 1, NULL, &c));
  dynamo_get_result *g = NULL;
  FAILS(dynamo_client_get(c, NULL, KEY("k"), 0, &g), DYNAMO_ERR_BAD_REQUEST, "store is NULL");
  FAILS(dynamo_client_get(c, "default", NULL, 5, 0, &g), DYNAMO_ERR_BAD_REQUEST, "key is NULL");
  FAILS(dynamo_client_get(c, "default", KEY("k"), 0, NULL), DYNAMO_ERR_BAD_REQUEST, "result");
  FAILS(dynamo_client_put(c, "default", KEY("k"), NULL, 3, NULL, 0, NULL),
        DYNAMO_ERR_BAD_REQUEST, "value is NULL");
  FAILS(dynamo_future_set_callback(NULL, NULL, NULL), DYNAMO_ERR_BAD_REQUEST, "callback");
  dynamo_key_page *kp = NULL;
  FAILS(dynamo_client_list_keys(c, NULL, NULL, 10, &kp), DYNAMO_ERR_BAD_REQUEST, "store is NULL");
  FAILS(dynamo_client_list_keys(c, "default", NULL, 10, NULL), DYNAMO_ERR_BAD_REQUEST, "page");
  FAILS(dynamo_client_list_keys_async(c, "default", NULL, 10, NULL), DYNAMO_ERR_BAD_REQUEST,
        "future");
  size_t kn = 0;
  FAILS(dynamo_key_page_count(NULL, &kn), DYNAMO_ERR_BAD_REQUEST, "handle is NULL");
  FAILS(dynamo_key_page_next(NULL, NULL), DYNAMO_ERR_BAD_REQUEST, "is NULL");
  FAILS(dynamo_key_page_key((dynamo_key_page *)g, 0, NULL, NULL), DYNAMO_ERR_BAD_REQUEST,
        "is NULL");
  FAILS(dynamo_key_page_free((dynamo_key_page *)&kn), DYNAMO_ERR_BAD_REQUEST, "not live");
  FAILS(dynamo_get_result_stale_replicas(NULL, NULL, NULL), DYNAMO_ERR_BAD_REQUEST, "NULL");
  FAILS(dynamo_key_page_unanswered(NULL, NULL, NULL), DYNAMO_ERR_BAD_REQUEST, "NULL");
  FAILS(dynamo_future_key_page_result(NULL, &kp), DYNAMO_ERR_BAD_REQUEST, "handle is NULL");
  CHECK(kp == NULL, "outputs untouched on failure");
  /* Empty keys are refused; an empty value is a value. */
  FAILS(dynamo_client_put(c, "default", NULL, 0, KEY("v"), NULL, 0, NULL),
        DYNAMO_ERR_BAD_REQUEST, "key");
  OK(dynamo_client_put(c, "default", KEY("empty-value"), NULL, 0, NULL, 0, NULL));

  /* Invalid UTF-8 in names. */
  FAILS(dynamo_client_get(c, "bad\xff\xfename", KEY("k"), 0, &g), DYNAMO_ERR_BAD_REQUEST,
        "UTF-8");
  FAILS(dynamo_client_put(c, "default", KEY("k"), KEY("v"), "\xc3\x28", 0, NULL),
        DYNAMO_ERR_BAD_REQUEST, "UTF-8");
  /* A malformed context, and one from another key. */
  FAILS(dynamo_client_put(c, "default", KEY("k"), KEY("v"), "garbage", 0, NULL),
        DYNAMO_ERR_BAD_CONTEXT, "context");
  dynamo_put_result *p = NULL;
  OK(dynamo_client_put(c, "default", KEY("key-a"), KEY("a"), NULL, 0, &p));
  const char *ctx_a;
  OK(dynamo_put_result_context(p, &ctx_a));
  FAILS(dynamo_client_put(c, "default", KEY("key-b"), KEY("b"), ctx_a, 0, NULL),
        DYNAMO_ERR_BAD_CONTEXT, "");
  OK(dynamo_put_result_free(p));

  /* Oversize keys and values. */
  size_t big = (1u << 20) + 1;
  uint8_t *buf = calloc(big, 1);
  memset(buf, 'x', big);
  FAILS(dynamo_client_put(c, "default", KEY("k"), buf, big, NULL, 0, NULL),
        DYNAMO_ERR_BAD_REQUEST, "value");
  FAILS(dynamo_client_put(c, "default", buf, 5000, KEY("v"), NULL, 0, NULL),
        DYNAMO_ERR_BAD_REQUEST, "key");
  free(buf);

  /* Results: out of range, double free, use after free. */
  OK(dynamo_client_get(c, "default", KEY("empty-value"), 0, &g));
  const uint8_t *v;
  size_t len;
  bool deleted;
  FAILS(dynamo_get_result_sibling(g, 99, &v, &len, &deleted), DYNAMO_ERR_BAD_REQUEST,
        "out of range");
  OK(dynamo_get_result_free(g));
  FAILS(dynamo_get_result_free(g), DYNAMO_ERR_BAD_REQUEST, "not live");
  size_t n;
  FAILS(dynamo_get_result_count(g, &n), DYNAMO_ERR_BAD_REQUEST, "not live");
  /* A handle that never came from the library, and a result of the wrong type. */
  FAILS(dynamo_get_result_free((dynamo_get_result *)(uintptr_t)0x1234), DYNAMO_ERR_BAD_REQUEST,
        "not live");
  FAILS(dynamo_put_result_free((dynamo_put_result *)c), DYNAMO_ERR_BAD_REQUEST, "not live");

  /* Futures: not ready yet, double free. */
  dynamo_future *f = NULL;
  OK(dynamo_client_get_async(c, "default", KEY("k"), 0, &f));
  OK(dynamo_future_wait(f));
  OK(dynamo_future_free(f));
  FAILS(dynamo_future_free(f), DYNAMO_ERR_BAD_REQUEST, "not live");
  FAILS(dynamo_future_wait(f), DYNAMO_ERR_BAD_REQUEST, "not live");
  /* Freeing a future that is not ready is allowed. */
  OK(dynamo_client_put_async(c, "default", KEY("k"), KEY("v"), NULL, 0, &f));
  OK(dynamo_future_free(f));

  /* Buffers: double free, foreign pointers. */
  char *json = NULL;
  OK(dynamo_client_status(c, NULL, &json));
  OK(dynamo_free(json));
  FAILS(dynamo_free(json), DYNAMO_ERR_BAD_REQUEST, "not live");
  int local = 0;
  FAILS(dynamo_free(&local), DYNAMO_ERR_BAD_REQUEST, "not live");
  /* Handles and buffers never stand in for each other. */
  FAILS(dynamo_free(c), DYNAMO_ERR_BAD_REQUEST, "not live");
  OK(dynamo_client_status(c, NULL, &json));
  FAILS(dynamo_client_close((dynamo_client *)json), DYNAMO_ERR_BAD_REQUEST, "not live");
  OK(dynamo_free(json));
  OK(dynamo_free(NULL));

  /* A closed client. */
  OK(dynamo_client_close(c));
  FAILS(dynamo_client_close(c), DYNAMO_ERR_BAD_REQUEST, "not live");
  FAILS(dynamo_client_get(c, "default", KEY("k"), 0, &g), DYNAMO_ERR_BAD_REQUEST, "not live");
  FAILS(dynamo_client_put_async(c, "default", KEY("k"), KEY("v"), NULL, 0, &f),
        DYNAMO_ERR_BAD_REQUEST, "not live");

  /* Nodes that cannot be reached: unavailable, not a crash. */
  const char *dead = "127.0.0.1:1";
  OK(dynamo_client_open(&dead, 1, NULL, &c));
  FAILS(dynamo_client_get(c, "default", KEY("k"), 0, &g), DYNAMO_ERR_UNAVAILABLE, "127.0.0.1:1");
  OK(dynamo_client_close(c));
  /* With retries, every round is tried and the message says so. */
  OK(dynamo_client_options_init(&o));
  o.retries = 2;
  OK(dynamo_client_open(&dead, 1, &o, &c));
  FAILS(dynamo_client_put(c, "default", KEY("k"), KEY("v"), NULL, 0, NULL),
        DYNAMO_ERR_UNAVAILABLE, "after 3 attempts");
  OK(dynamo_client_close(c));

  /* Engines: bad spec, NULL path, closed engine, batch misuse. */
  dynamo_engine *e = NULL;
  FAILS(dynamo_engine_open("memory", NULL, &e), DYNAMO_ERR_BAD_REQUEST, "path");
  FAILS(dynamo_engine_open("no-such-engine", argv[2], &e), DYNAMO_ERR_BAD_REQUEST,
        "no-such-engine");
  OK(dynamo_engine_open("memory", argv[2], &e));
  FAILS(dynamo_engine_ensure_keyspace(e, "bad name!"), DYNAMO_ERR_BAD_REQUEST, "keyspace");
  FAILS(dynamo_engine_ensure_keyspace(e, "\xff"), DYNAMO_ERR_BAD_REQUEST, "UTF-8");
  dynamo_batch *b = NULL;
  OK(dynamo_batch_new(&b));
  OK(dynamo_batch_free(b));
  FAILS(dynamo_batch_free(b), DYNAMO_ERR_BAD_REQUEST, "not live");
  FAILS(dynamo_engine_write(e, b), DYNAMO_ERR_BAD_REQUEST, "not live");
  OK(dynamo_engine_close(e));
  FAILS(dynamo_engine_close(e), DYNAMO_ERR_BAD_REQUEST, "not live");

  /* Nodes: double stop, bad config. */
  dynamo_node *node = NULL;
  FAILS(dynamo_node_start(NULL, &node), DYNAMO_ERR_BAD_REQUEST, "config");
  FAILS(dynamo_node_start("this is not toml", &node), DYNAMO_ERR_BAD_REQUEST, "config");
  FAILS(dynamo_node_stop(NULL), DYNAMO_ERR_BAD_REQUEST, "NULL");

  /* A panic inside the library is caught at the boundary; the library stays usable. */
  FAILS(dynamo_debug_panic("boom from the test"), DYNAMO_ERR_INTERNAL, "boom from the test");
  FAILS(dynamo_debug_panic(NULL), DYNAMO_ERR_INTERNAL, "panic");
  OK(dynamo_client_open(&addr, 1, NULL, &c));
  OK(dynamo_client_get(c, "default", KEY("empty-value"), 0, &g));
  OK(dynamo_get_result_count(g, &n));
  CHECK(n == 1, "still usable after a panic");
  OK(dynamo_get_result_free(g));
  OK(dynamo_client_close(c));

  CHECK(strcmp(dynamo_status_name(DYNAMO_ERR_QUORUM), "quorum not reached") == 0, "names");
  CHECK(strcmp(dynamo_status_name(12345), "unknown status code") == 0, "unknown code");
  printf("misuse_test: ok\n");
  return 0;
}
