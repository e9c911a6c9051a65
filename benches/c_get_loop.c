/* The C side of the Python binding's per-call cost (bindings/python/bench/call_overhead.py):
 * blocking gets answered by an embedded node from memory (store N=R=W=1, one key),
 * ROUNDS rounds of CALLS gets; prints {"median_us": ..., "rounds_us": [...]}.
 * Usage: c_get_loop [CALLS] [ROUNDS] */
#include <dynamo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void ok(dynamo_status st, const char *what) {
  if (st != DYNAMO_OK) {
    fprintf(stderr, "%s: %s\n", what, dynamo_last_error_message());
    exit(1);
  }
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  long calls = argc > 1 ? atol(argv[1]) : 20000, rounds = argc > 2 ? atol(argv[2]) : 5;
  if (calls < 1 || rounds < 1 || rounds > 100) return 2;
  char dir[] = "/tmp/dynamo-c-get-loop-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  char config[1024];
  snprintf(config, sizeof config,
           "[node]\nname = \"solo\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"%s\"\n"
           "[cluster]\npartitions = 8\n[[cluster.members]]\nname = \"solo\"\n"
           "address = \"127.0.0.1:0\"\n[[stores]]\nname = \"s\"\nengine = \"memory\"\n"
           "n = 1\nr = 1\nw = 1\n",
           dir);
  dynamo_node *node;
  ok(dynamo_node_start(config, &node), "start");
  const char *address;
  ok(dynamo_node_address(node, &address), "address");
  dynamo_client *client;
  ok(dynamo_client_open(&address, 1, NULL, &client), "open");
  uint8_t value[100];
  memset(value, 'v', sizeof value);
  ok(dynamo_client_put(client, "s", (const uint8_t *)"key", 3, value, sizeof value, NULL, 0, NULL),
     "put");
  dynamo_get_result *r;
  for (int i = 0; i < 1000; i++) {
    ok(dynamo_client_get(client, "s", (const uint8_t *)"key", 3, 0, &r), "get");
    dynamo_get_result_free(r);
  }
  double per[100];
  for (long k = 0; k < rounds; k++) {
    double start = now();
    for (long i = 0; i < calls; i++) {
      ok(dynamo_client_get(client, "s", (const uint8_t *)"key", 3, 0, &r), "get");
      /* Read what Python reads: the siblings and the context. */
      size_t count;
      const uint8_t *v;
      size_t len;
      bool deleted;
      const char *ctx;
      dynamo_get_result_count(r, &count);
      for (size_t j = 0; j < count; j++) dynamo_get_result_sibling(r, j, &v, &len, &deleted);
      dynamo_get_result_context(r, &ctx);
      const char *stale;
      size_t stale_count;
      dynamo_get_result_stale_replicas(r, &stale, &stale_count);
      dynamo_get_result_free(r);
    }
    per[k] = (now() - start) / (double)calls * 1e6;
  }
  double sorted[100];
  memcpy(sorted, per, sizeof(double) * (size_t)rounds);
  qsort(sorted, (size_t)rounds, sizeof(double), cmp);
  printf("{\"median_us\": %.3f, \"rounds_us\": [", sorted[rounds / 2]);
  for (long k = 0; k < rounds; k++) printf("%s%.3f", k ? ", " : "", per[k]);
  printf("]}\n");
  dynamo_client_close(client);
  dynamo_node_stop(node);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : 1;
}
