/* An engine written in C (cmem) registered with libdynamo: the engine conformance suite
 * passes against it, the local engine API opens it by name, and a node embedded in
 * this process serves a store on it. Usage: cengine_test PORT DIR */
#include <stdbool.h>
#include <stdint.h>

#include "check.h"
#include "cmem_engine.h"

int main(int argc, char **argv) {
  CHECK(argc == 3, "usage: cengine_test PORT DIR");
  OK(dynamo_engine_register("cmem", &cmem_ops, NULL));
  /* Built-in names and tables missing a callback are refused. */
  FAILS(dynamo_engine_register("rocksdb", &cmem_ops, NULL), DYNAMO_ERR_BAD_REQUEST, "built-in");
  dynamo_engine_ops partial = cmem_ops;
  partial.scan = NULL;
  FAILS(dynamo_engine_register("partial", &partial, NULL), DYNAMO_ERR_BAD_REQUEST, "scan");

  OK(dynamo_engine_check("cmem", false));
  CHECK(cmem_open_instances() == 0, "the suite closed every instance (%d open)",
        cmem_open_instances());

  dynamo_engine *e = NULL;
  OK(dynamo_engine_open("cmem", argv[2], &e));
  OK(dynamo_engine_ensure_keyspace(e, "data"));
  OK(dynamo_engine_put(e, "data", KEY("k"), KEY("v")));
  uint8_t *v;
  size_t len;
  bool found;
  OK(dynamo_engine_get(e, "data", KEY("k"), &v, &len, &found));
  CHECK(found && len == 1 && v[0] == 'v', "cmem get");
  OK(dynamo_free(v));
  OK(dynamo_engine_close(e));
  CHECK(cmem_open_instances() == 0, "closed");

  /* A single-node cluster whose store runs on the C engine. */
  char config[2048];
  snprintf(config, sizeof config,
           "[node]\nname = \"c1\"\nlisten = \"127.0.0.1:%s\"\ndata_dir = \"%s/node\"\n"
           "[cluster]\npartitions = 8\nmembers = [{ name = \"c1\", address = \"127.0.0.1:%s\" }]\n"
           "[[stores]]\nname = \"onc\"\nengine = \"cmem\"\nn = 1\nr = 1\nw = 1\n"
           /* Chosen by object-size profile: large objects go to SQLite. */
           "[[stores]]\nname = \"big\"\nengine = \"auto\"\nobject_size = \"large\"\n"
           "n = 1\nr = 1\nw = 1\n",
           argv[1], argv[2], argv[1]);
  dynamo_node *node = NULL;
  OK(dynamo_node_start(config, &node));
  CHECK(cmem_open_instances() == 1, "the node opened the C engine");
  const char *addr;
  OK(dynamo_node_address(node, &addr));
  dynamo_client *c = NULL;
  OK(dynamo_client_open(&addr, 1, NULL, &c));
  for (int i = 0; i < 50; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", i);
    OK(dynamo_client_put(c, "onc", KEY(key), KEY(key), NULL, 0, NULL));
  }
  dynamo_get_result *g = NULL;
  OK(dynamo_client_get(c, "onc", KEY("k7"), 0, &g));
  const uint8_t *gv;
  bool deleted;
  OK(dynamo_get_result_sibling(g, 0, &gv, &len, &deleted));
  CHECK(len == 2 && memcmp(gv, "k7", 2) == 0, "the node serves values from the C engine");
  OK(dynamo_get_result_free(g));
  char *json = NULL;
  OK(dynamo_node_status(node, &json));
  CHECK(strstr(json, "\"engine\":\"cmem\"") != NULL, "status names the engine: %s", json);
  CHECK(strstr(json, "\"engine\":\"sqlite\"") != NULL, "auto chose sqlite: %s", json);
  OK(dynamo_free(json));
  OK(dynamo_client_close(c));
  OK(dynamo_node_stop(node));
  CHECK(cmem_open_instances() == 0, "stopping the node closed the C engine (%d open)",
        cmem_open_instances());
  printf("cengine_test: ok\n");
  return 0;
}
