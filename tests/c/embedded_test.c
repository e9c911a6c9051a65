/* Three nodes embedded in this process form a cluster that a C client uses; each
 * reports its status as JSON and stops cleanly. Usage: embedded_test PORT PORT PORT DIR */
#include <stdbool.h>
#include <stdint.h>

#include "check.h"

static void config(char *out, size_t size, int me, const int ports[3], const char *dir,
                   const char *engine) {
  snprintf(out, size,
           "[node]\n"
           "name = \"e%d\"\n"
           "listen = \"127.0.0.1:%d\"\n"
           "data_dir = \"%s/e%d\"\n"
           "request_timeout_ms = 2000\n"
           "[cluster]\n"
           "partitions = 64\n"
           "members = [\n"
           "  { name = \"e0\", address = \"127.0.0.1:%d\" },\n"
           "  { name = \"e1\", address = \"127.0.0.1:%d\" },\n"
           "  { name = \"e2\", address = \"127.0.0.1:%d\" },\n"
           "]\n"
           "[[stores]]\n"
           "name = \"default\"\n"
           "engine = \"%s\"\n",
           me, ports[me], dir, me, ports[0], ports[1], ports[2], engine);
}

int main(int argc, char **argv) {
  CHECK(argc == 5, "usage: embedded_test PORT PORT PORT DIR");
  int ports[3] = {atoi(argv[1]), atoi(argv[2]), atoi(argv[3])};
  const char *dir = argv[4];
  dynamo_node *nodes[3] = {NULL, NULL, NULL};
  char text[2048];
  for (int i = 0; i < 3; i++) {
    config(text, sizeof text, i, ports, dir, "memory");
    OK(dynamo_node_start(text, &nodes[i]));
  }

  /* A second node on a taken port fails at start, with the reason. */
  dynamo_node *dup = NULL;
  config(text, sizeof text, 0, ports, dir, "memory");
  FAILS(dynamo_node_start(text, &dup), DYNAMO_ERR_UNAVAILABLE, "127.0.0.1");
  CHECK(dup == NULL, "no node on failure");
  /* A bad config names the field. */
  FAILS(dynamo_node_start("[[stores]]\nname = \"s\"\nn = 0\n", &dup), DYNAMO_ERR_BAD_REQUEST,
        "n");

  const char *addrs[3];
  for (int i = 0; i < 3; i++) OK(dynamo_node_address(nodes[i], &addrs[i]));
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%d", ports[1]);
  CHECK(strcmp(addrs[1], want) == 0, "address %s, expected %s", addrs[1], want);

  dynamo_client *c = NULL;
  OK(dynamo_client_open(addrs, 3, NULL, &c));
  for (int i = 0; i < 100; i++) {
    char key[32], val[32];
    snprintf(key, sizeof key, "emb-%d", i);
    snprintf(val, sizeof val, "val-%d", i);
    OK(dynamo_client_put(c, "default", KEY(key), KEY(val), NULL, 3, NULL));
  }
  for (int i = 0; i < 100; i++) {
    char key[32], val[32];
    snprintf(key, sizeof key, "emb-%d", i);
    snprintf(val, sizeof val, "val-%d", i);
    dynamo_get_result *g = NULL;
    OK(dynamo_client_get(c, "default", KEY(key), 3, &g));
    size_t n = 0;
    OK(dynamo_get_result_count(g, &n));
    const uint8_t *v;
    size_t len;
    bool deleted;
    OK(dynamo_get_result_sibling(g, 0, &v, &len, &deleted));
    CHECK(n == 1 && len == strlen(val) && memcmp(v, val, len) == 0, "read back %s", key);
    OK(dynamo_get_result_free(g));
  }

  for (int i = 0; i < 3; i++) {
    char *json = NULL;
    OK(dynamo_node_status(nodes[i], &json));
    char name[32];
    snprintf(name, sizeof name, "\"node\":\"e%d\"", i);
    CHECK(strstr(json, name) != NULL, "status of e%d: %s", i, json);
    CHECK(strstr(json, "\"members\"") != NULL, "status lists members: %s", json);
    OK(dynamo_free(json));
  }

  /* Stop one node: the cluster still serves W=2 writes and R=2 reads (sloppy quorum). */
  OK(dynamo_node_stop(nodes[2]));
  FAILS(dynamo_node_stop(nodes[2]), DYNAMO_ERR_BAD_REQUEST, "not live");
  OK(dynamo_client_put(c, "default", KEY("after-stop"), KEY("still"), NULL, 0, NULL));
  dynamo_get_result *g = NULL;
  OK(dynamo_client_get(c, "default", KEY("after-stop"), 0, &g));
  size_t n = 0;
  OK(dynamo_get_result_count(g, &n));
  CHECK(n == 1, "one value after a node stopped, got %zu", n);
  OK(dynamo_get_result_free(g));

  OK(dynamo_client_close(c));
  OK(dynamo_node_stop(nodes[0]));
  OK(dynamo_node_stop(nodes[1]));

  /* Port 0: the OS picks the port, and the node's address says which. */
  snprintf(text, sizeof text,
           "[node]\nname = \"solo\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"%s/solo\"\n"
           "[[stores]]\nname = \"default\"\nengine = \"memory\"\nn = 1\nr = 1\nw = 1\n",
           dir);
  dynamo_node *solo = NULL;
  OK(dynamo_node_start(text, &solo));
  const char *solo_addr = NULL;
  OK(dynamo_node_address(solo, &solo_addr));
  CHECK(strncmp(solo_addr, "127.0.0.1:", 10) == 0 && strcmp(solo_addr, "127.0.0.1:0") != 0,
        "port 0 resolved to a real port: %s", solo_addr);
  OK(dynamo_client_open(&solo_addr, 1, NULL, &c));
  OK(dynamo_client_put(c, "default", KEY("solo"), KEY("yes"), NULL, 0, NULL));
  OK(dynamo_client_get(c, "default", KEY("solo"), 0, &g));
  OK(dynamo_get_result_count(g, &n));
  CHECK(n == 1, "the solo node serves its own writes");
  OK(dynamo_get_result_free(g));
  OK(dynamo_client_close(c));
  OK(dynamo_node_stop(solo));
  printf("embedded_test: ok\n");
  return 0;
}
