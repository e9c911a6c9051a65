// dynamo.hpp: a small header-only C++17 wrapper over libdynamo's C API (dynamo.h).
//
// Owning handles (move-only classes that free what they own in their destructors) and
// errors as exceptions: every failed call throws dynamo::Error, which carries the C
// status code (status()) and the library's message (what()). Results are copied into
// plain C++ values (std::string, std::vector), so nothing borrowed outlives its owner.
// Thread-safety is the C API's: Client, Node and Engine may be shared between threads.
#ifndef DYNAMO_HPP
#define DYNAMO_HPP

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dynamo.h"

namespace dynamo {

/// A failed libdynamo call: the status code and the library's message.
class Error : public std::runtime_error {
 public:
  Error(dynamo_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  /// The DYNAMO_ERR_* code.
  dynamo_status status() const noexcept { return status_; }

 private:
  dynamo_status status_;
};

/// Throws dynamo::Error unless `status` is DYNAMO_OK.
inline void check(dynamo_status status) {
  if (status != DYNAMO_OK) throw Error(status, dynamo_last_error_message());
}

inline const uint8_t* bytes(std::string_view s) {
  return reinterpret_cast<const uint8_t*>(s.data());
}

/// One sibling: its value, or none for a tombstone.
struct Sibling {
  std::optional<std::string> value;
  bool deleted() const { return !value.has_value(); }
};

/// The outcome of a get: all siblings and the context to write back with.
struct GetResult {
  std::vector<Sibling> siblings;
  std::string context;
  /// The values of the siblings that are not tombstones.
  std::vector<std::string> values() const {
    std::vector<std::string> out;
    for (const auto& s : siblings)
      if (s.value) out.push_back(*s.value);
    return out;
  }
};

namespace detail {
// Owners of what the C API hands out, so an exception (a failed call, or a failed
// allocation while copying) never leaks it.
struct FreeGetResult {
  void operator()(dynamo_get_result* r) const { dynamo_get_result_free(r); }
};
struct FreePutResult {
  void operator()(dynamo_put_result* r) const { dynamo_put_result_free(r); }
};
struct FreeBuffer {
  void operator()(void* p) const { dynamo_free(p); }
};
struct FreeIter {
  void operator()(dynamo_iter* it) const { dynamo_iter_free(it); }
};

inline GetResult take(dynamo_get_result* raw) {
  std::unique_ptr<dynamo_get_result, FreeGetResult> r(raw);
  GetResult out;
  size_t n = 0;
  check(dynamo_get_result_count(r.get(), &n));
  for (size_t i = 0; i < n; i++) {
    const uint8_t* v = nullptr;
    size_t len = 0;
    bool deleted = false;
    check(dynamo_get_result_sibling(r.get(), i, &v, &len, &deleted));
    out.siblings.push_back(
        deleted ? Sibling{} : Sibling{std::string(reinterpret_cast<const char*>(v), len)});
  }
  const char* ctx = nullptr;
  check(dynamo_get_result_context(r.get(), &ctx));
  out.context = ctx;
  return out;
}

inline std::string take(dynamo_put_result* raw) {
  std::unique_ptr<dynamo_put_result, FreePutResult> r(raw);
  const char* ctx = nullptr;
  check(dynamo_put_result_context(r.get(), &ctx));
  return ctx;
}
}  // namespace detail

/// An operation in progress. get()/put() block until it is ready and return its
/// outcome (or throw its error); ready() polls.
class Future {
 public:
  explicit Future(dynamo_future* f) : f_(f) {}
  Future(Future&& o) noexcept : f_(std::exchange(o.f_, nullptr)) {}
  Future& operator=(Future&& o) noexcept {
    std::swap(f_, o.f_);
    return *this;
  }
  Future(const Future&) = delete;
  Future& operator=(const Future&) = delete;
  ~Future() {
    if (f_) dynamo_future_free(f_);
  }
  bool ready() const {
    bool r = false;
    check(dynamo_future_is_ready(f_, &r));
    return r;
  }
  void wait() const { check(dynamo_future_wait(f_)); }
  /// The outcome of a get future.
  GetResult get() const {
    wait();
    dynamo_get_result* r = nullptr;
    check(dynamo_future_get_result(f_, &r));
    return detail::take(r);
  }
  /// The new context of a put or delete future.
  std::string put() const {
    wait();
    dynamo_put_result* r = nullptr;
    check(dynamo_future_put_result(f_, &r));
    return detail::take(r);
  }
  dynamo_future* handle() const { return f_; }

 private:
  dynamo_future* f_;
};

/// A client of a cluster. Thread-safe.
class Client {
 public:
  explicit Client(const std::vector<std::string>& nodes,
                  int coordination = DYNAMO_COORDINATION_CLIENT, uint32_t timeout_ms = 3000,
                  uint32_t retries = 0) {
    std::vector<const char*> ptrs;
    for (const auto& n : nodes) ptrs.push_back(n.c_str());
    dynamo_client_options o;
    check(dynamo_client_options_init(&o));
    o.coordination = coordination;
    o.timeout_ms = timeout_ms;
    o.retries = retries;
    check(dynamo_client_open(ptrs.data(), ptrs.size(), &o, &c_));
  }
  Client(Client&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  Client& operator=(Client&& o) noexcept {
    std::swap(c_, o.c_);
    return *this;
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client() {
    if (c_) dynamo_client_close(c_);
  }

  GetResult get(const std::string& store, std::string_view key, uint8_t r = 0) const {
    dynamo_get_result* res = nullptr;
    check(dynamo_client_get(c_, store.c_str(), bytes(key), key.size(), r, &res));
    return detail::take(res);
  }
  /// Writes `value`; returns the new context. An empty `context` means none.
  std::string put(const std::string& store, std::string_view key, std::string_view value,
                  const std::string& context = "", uint8_t w = 0) const {
    dynamo_put_result* res = nullptr;
    check(dynamo_client_put(c_, store.c_str(), bytes(key), key.size(), bytes(value),
                            value.size(), context.empty() ? nullptr : context.c_str(), w,
                            &res));
    return detail::take(res);
  }
  std::string del(const std::string& store, std::string_view key,
                  const std::string& context = "", uint8_t w = 0) const {
    dynamo_put_result* res = nullptr;
    check(dynamo_client_delete(c_, store.c_str(), bytes(key), key.size(),
                               context.empty() ? nullptr : context.c_str(), w, &res));
    return detail::take(res);
  }
  Future get_async(const std::string& store, std::string_view key, uint8_t r = 0) const {
    dynamo_future* f = nullptr;
    check(dynamo_client_get_async(c_, store.c_str(), bytes(key), key.size(), r, &f));
    return Future(f);
  }
  Future put_async(const std::string& store, std::string_view key, std::string_view value,
                   const std::string& context = "", uint8_t w = 0) const {
    dynamo_future* f = nullptr;
    check(dynamo_client_put_async(c_, store.c_str(), bytes(key), key.size(), bytes(value),
                                  value.size(), context.empty() ? nullptr : context.c_str(),
                                  w, &f));
    return Future(f);
  }
  dynamo_client* handle() const { return c_; }

 private:
  dynamo_client* c_ = nullptr;
};

/// A node embedded in this process; stopped by its destructor.
class Node {
 public:
  explicit Node(const std::string& config_toml) {
    check(dynamo_node_start(config_toml.c_str(), &n_));
  }
  Node(Node&& o) noexcept : n_(std::exchange(o.n_, nullptr)) {}
  Node& operator=(Node&& o) noexcept {
    std::swap(n_, o.n_);
    return *this;
  }
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node() {
    if (n_) dynamo_node_stop(n_);
  }
  std::string address() const {
    const char* a = nullptr;
    check(dynamo_node_address(n_, &a));
    return a;
  }
  /// The node's status as JSON.
  std::string status() const {
    char* json = nullptr;
    check(dynamo_node_status(n_, &json));
    std::unique_ptr<char, detail::FreeBuffer> owned(json);
    return std::string(owned.get());
  }
  /// Stops the node now (the destructor then does nothing).
  void stop() { check(dynamo_node_stop(std::exchange(n_, nullptr))); }

 private:
  dynamo_node* n_ = nullptr;
};

/// A local storage engine opened by spec ("rocksdb", "sqlite", "memory", ...).
class Engine {
 public:
  Engine(const std::string& spec, const std::string& path) {
    check(dynamo_engine_open(spec.c_str(), path.c_str(), &e_));
  }
  Engine(Engine&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  Engine& operator=(Engine&& o) noexcept {
    std::swap(e_, o.e_);
    return *this;
  }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  ~Engine() {
    if (e_) dynamo_engine_close(e_);
  }
  void ensure_keyspace(const std::string& ks) const {
    check(dynamo_engine_ensure_keyspace(e_, ks.c_str()));
  }
  std::optional<std::string> get(const std::string& ks, std::string_view key) const {
    uint8_t* v = nullptr;
    size_t len = 0;
    bool found = false;
    check(dynamo_engine_get(e_, ks.c_str(), bytes(key), key.size(), &v, &len, &found));
    if (!found) return std::nullopt;
    std::unique_ptr<uint8_t, detail::FreeBuffer> owned(v);
    return std::string(reinterpret_cast<const char*>(owned.get()), len);
  }
  void put(const std::string& ks, std::string_view key, std::string_view value) const {
    check(dynamo_engine_put(e_, ks.c_str(), bytes(key), key.size(), bytes(value), value.size()));
  }
  void del(const std::string& ks, std::string_view key) const {
    check(dynamo_engine_delete(e_, ks.c_str(), bytes(key), key.size()));
  }
  /// Every pair of `ks` in [start, end) (empty end: to the last key), in order.
  std::vector<std::pair<std::string, std::string>> scan(const std::string& ks,
                                                        std::string_view start = {},
                                                        std::string_view end = {},
                                                        bool reverse = false) const {
    dynamo_range r{bytes(start), start.size(), DYNAMO_BOUND_INCLUDED,
                   bytes(end),   end.size(),   end.empty() ? DYNAMO_BOUND_UNBOUNDED
                                                           : DYNAMO_BOUND_EXCLUDED};
    dynamo_iter* raw = nullptr;
    check(dynamo_engine_scan(e_, ks.c_str(), &r, reverse, &raw));
    std::unique_ptr<dynamo_iter, detail::FreeIter> it(raw);
    std::vector<std::pair<std::string, std::string>> out;
    for (;;) {
      bool has = false;
      const uint8_t *k = nullptr, *v = nullptr;
      size_t kl = 0, vl = 0;
      check(dynamo_iter_next(it.get(), &has, &k, &kl, &v, &vl));
      if (!has) break;
      out.emplace_back(std::string(reinterpret_cast<const char*>(k), kl),
                       std::string(reinterpret_cast<const char*>(v), vl));
    }
    return out;
  }
  void sync() const { check(dynamo_engine_sync(e_)); }
  dynamo_engine* handle() const { return e_; }

 private:
  dynamo_engine* e_ = nullptr;
};

}  // namespace dynamo

#endif  // DYNAMO_HPP
