// The C++17 RAII wrapper (include/dynamo.hpp) against a real local cluster: owning
// handles, values copied out, errors as dynamo::Error exceptions with the C status.
// Usage: wrapper_test ADDRESS... (last argument: a scratch directory)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dynamo.hpp"

#define CHECK(cond, what)                                                \
  do {                                                                   \
    if (!(cond)) {                                                       \
      std::fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, what); \
      std::exit(1);                                                      \
    }                                                                    \
  } while (0)

int main(int argc, char** argv) {
  CHECK(argc >= 3, "usage: wrapper_test ADDRESS... DIR");
  std::vector<std::string> nodes(argv + 1, argv + argc - 1);
  std::string dir = argv[argc - 1];
  try {
    dynamo::Client client(nodes);
    std::string ctx = client.put("default", "cpp:1", "one");
    CHECK(!ctx.empty(), "put gives a context");
    client.put("default", "cpp:1", "two");  // blind: a sibling
    auto got = client.get("default", "cpp:1");
    CHECK(got.siblings.size() == 2, "two siblings");
    client.put("default", "cpp:1", "both", got.context);
    CHECK(client.get("default", "cpp:1").values() == std::vector<std::string>{"both"},
          "resolved");

    std::vector<dynamo::Future> futures;
    for (int i = 0; i < 20; i++)
      futures.push_back(client.put_async("default", "cpp:f" + std::to_string(i), "v"));
    for (auto& f : futures) CHECK(!f.put().empty(), "future put");
    CHECK(client.get_async("default", "cpp:f3").get().values().size() == 1, "future get");

    bool threw = false;
    try {
      client.get("nope", "k");
    } catch (const dynamo::Error& e) {
      threw = e.status() == DYNAMO_ERR_UNKNOWN_STORE && std::string(e.what()).find("nope") != std::string::npos;
    }
    CHECK(threw, "unknown store throws dynamo::Error with its status and message");

    dynamo::Engine engine("sqlite", dir + "/cpp-engine");
    engine.ensure_keyspace("ks");
    engine.put("ks", "b", "2");
    engine.put("ks", "a", "1");
    engine.put("ks", "c", "3");
    CHECK(engine.get("ks", "a") == std::optional<std::string>("1"), "engine get");
    CHECK(!engine.get("ks", "zz").has_value(), "engine miss");
    auto pairs = engine.scan("ks", "a", "c");
    CHECK(pairs.size() == 2 && pairs[0].first == "a" && pairs[1].first == "b", "engine scan");
    auto rev = engine.scan("ks", "", "", true);
    CHECK(rev.size() == 3 && rev[0].first == "c", "engine reverse scan");
  } catch (const dynamo::Error& e) {
    std::fprintf(stderr, "unexpected dynamo::Error %d: %s\n", e.status(), e.what());
    return 1;
  }
  std::printf("wrapper_test: ok\n");
  return 0;
}
