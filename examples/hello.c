/* hello.c: write a key, read it back with all its siblings, and resolve them.
 * Build: cc hello.c $(pkg-config --cflags --libs dynamo) -o hello
 * Run:   ./hello 127.0.0.1:7400            (any node of a running cluster) */
#include <dynamo.h>
#include <stdio.h>
#include <string.h>

static int fail(const char *what, dynamo_status st) {
  fprintf(stderr, "%s failed (%s): %s\n", what, dynamo_status_name(st),
          dynamo_last_error_message());
  return 1;
}

int main(int argc, char **argv) {
  const char *nodes[] = {argc > 1 ? argv[1] : "127.0.0.1:7400"};
  dynamo_client *client;
  dynamo_status st = dynamo_client_open(nodes, 1, NULL, &client);
  if (st != DYNAMO_OK) return fail("open", st);

  const char *key = "cart:42", *value = "1 book";
  st = dynamo_client_put(client, "default", (const uint8_t *)key, strlen(key),
                         (const uint8_t *)value, strlen(value), NULL, 0, NULL);
  if (st != DYNAMO_OK) return fail("put", st);

  dynamo_get_result *got;
  st = dynamo_client_get(client, "default", (const uint8_t *)key, strlen(key), 0, &got);
  if (st != DYNAMO_OK) return fail("get", st);
  size_t count;
  dynamo_get_result_count(got, &count);
  for (size_t i = 0; i < count; i++) {
    const uint8_t *v;
    size_t len;
    bool deleted;
    dynamo_get_result_sibling(got, i, &v, &len, &deleted);
    printf("sibling %zu: %.*s\n", i, (int)len, deleted ? "(deleted)" : (const char *)v);
  }

  /* Writing with the read's context supersedes every sibling it saw. */
  const char *context;
  dynamo_get_result_context(got, &context);
  const char *merged = "2 books";
  st = dynamo_client_put(client, "default", (const uint8_t *)key, strlen(key),
                         (const uint8_t *)merged, strlen(merged), context, 0, NULL);
  dynamo_get_result_free(got);
  if (st != DYNAMO_OK) return fail("put with context", st);

  dynamo_client_close(client);
  printf("ok\n");
  return 0;
}
