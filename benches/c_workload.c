/* c_workload: YCSB workload A (50% reads, 50% read-modify-write updates, scrambled
 * zipfian keys over user0000000000.., 100-byte values) driven through libdynamo's
 * future API with completion callbacks: CONCURRENCY operations in flight, no thread per
 * request. The same workload as `dynamo bench --workload a --no-load`, to measure what
 * the C boundary costs. Prints one JSON object.
 * Usage: c_workload [--concurrency N] [--duration SECONDS] [--keys N] [--warmup SECONDS]
 *                   [--store NAME] ADDRESS... */
#include <dynamo.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* YCSB's scrambled zipfian (theta 0.99), as in the Rust benchmark. */
static double z_theta = 0.99, z_alpha, z_zetan, z_eta;
static uint64_t z_n;

static void zipf_init(uint64_t n) {
  z_n = n;
  double zetan = 0, zeta2 = 0;
  for (uint64_t i = 1; i <= n; i++) zetan += 1.0 / pow((double)i, z_theta);
  for (uint64_t i = 1; i <= 2 && i <= n; i++) zeta2 += 1.0 / pow((double)i, z_theta);
  z_zetan = zetan;
  z_alpha = 1.0 / (1.0 - z_theta);
  z_eta = (1.0 - pow(2.0 / (double)n, 1.0 - z_theta)) / (1.0 - zeta2 / zetan);
}

static uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static double uniform(uint64_t *s) { return (double)(xorshift(s) >> 11) / 9007199254740992.0; }

static uint64_t zipf_next(uint64_t *s) {
  double u = uniform(s), uz = u * z_zetan;
  uint64_t rank;
  if (uz < 1.0)
    rank = 0;
  else if (uz < 1.0 + pow(0.5, z_theta))
    rank = 1;
  else
    rank = (uint64_t)((double)z_n * pow(z_eta * u - z_eta + 1.0, z_alpha));
  if (rank >= z_n) rank = z_n - 1;
  uint64_t h = 0xcbf29ce484222325ull;
  for (int i = 0; i < 8; i++) {
    h ^= (rank >> (8 * i)) & 0xff;
    h *= 0x100000001b3ull;
  }
  return h % z_n;
}

/* Latency histogram: 1 us buckets up to 100 ms, then one overflow bucket. */
#define BUCKETS 100001
static atomic_uint_fast64_t hist[BUCKETS + 1];
static atomic_uint_fast64_t done_ops, errors, requests;

static void record(double seconds) {
  long us = (long)(seconds * 1e6);
  if (us < 0) us = 0;
  atomic_fetch_add(&hist[us < BUCKETS ? us : BUCKETS], 1);
}

static double percentile(double p) {
  uint64_t total = 0;
  for (int i = 0; i <= BUCKETS; i++) total += atomic_load(&hist[i]);
  uint64_t want = (uint64_t)ceil(p * (double)total), seen = 0;
  for (int i = 0; i <= BUCKETS; i++) {
    seen += atomic_load(&hist[i]);
    if (seen >= want && want > 0) return (double)i;
  }
  return 0;
}

static dynamo_client *client;
static const char *store = "default";
static uint64_t keys = 10000;
static atomic_bool measuring, stopping;
static atomic_int in_flight;
static const uint8_t value[100] = {'v'};

typedef struct {
  uint64_t rng;
  char key[32];
  double started;
  int is_read;
} slot;

static void start_op(slot *s);

static void finish_op(slot *s, int ok) {
  if (atomic_load(&measuring)) {
    if (ok) {
      record(now_s() - s->started);
      atomic_fetch_add(&done_ops, 1);
      atomic_fetch_add(&requests, s->is_read ? 1 : 2);
    } else {
      atomic_fetch_add(&errors, 1);
    }
  }
  if (atomic_load(&stopping))
    atomic_fetch_sub(&in_flight, 1);
  else
    start_op(s);
}

static void on_put(dynamo_future *f, void *user) {
  slot *s = user;
  int ok = dynamo_future_put_result(f, NULL) == DYNAMO_OK;
  dynamo_future_free(f);
  finish_op(s, ok);
}

static void on_get(dynamo_future *f, void *user) {
  slot *s = user;
  dynamo_get_result *r = NULL;
  int ok = dynamo_future_get_result(f, &r) == DYNAMO_OK;
  dynamo_future_free(f);
  if (!ok || s->is_read) {
    if (r) dynamo_get_result_free(r);
    finish_op(s, ok);
    return;
  }
  /* Read-modify-write: write back with the read's context. */
  const char *ctx = NULL;
  dynamo_get_result_context(r, &ctx);
  dynamo_future *p = NULL;
  dynamo_status st = dynamo_client_put_async(client, store, (const uint8_t *)s->key,
                                             strlen(s->key), value, sizeof value, ctx, 0, &p);
  dynamo_get_result_free(r);
  if (st != DYNAMO_OK || dynamo_future_set_callback(p, on_put, s) != DYNAMO_OK) {
    if (p) dynamo_future_free(p);
    finish_op(s, 0);
  }
}

static void start_op(slot *s) {
  snprintf(s->key, sizeof s->key, "user%010llu", (unsigned long long)zipf_next(&s->rng));
  s->is_read = uniform(&s->rng) < 0.5;
  s->started = now_s();
  dynamo_future *f = NULL;
  dynamo_status st =
      dynamo_client_get_async(client, store, (const uint8_t *)s->key, strlen(s->key), 0, &f);
  if (st != DYNAMO_OK || dynamo_future_set_callback(f, on_get, s) != DYNAMO_OK) {
    fprintf(stderr, "c_workload: %s\n", dynamo_last_error_message());
    if (f) dynamo_future_free(f);
    atomic_fetch_add(&errors, 1);
    atomic_fetch_sub(&in_flight, 1);
  }
}

int main(int argc, char **argv) {
  int concurrency = 64;
  double duration = 10, warmup = 2;
  const char *nodes[64];
  size_t count = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--concurrency") && i + 1 < argc)
      concurrency = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--duration") && i + 1 < argc)
      duration = atof(argv[++i]);
    else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
      warmup = atof(argv[++i]);
    else if (!strcmp(argv[i], "--keys") && i + 1 < argc)
      keys = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--store") && i + 1 < argc)
      store = argv[++i];
    else if (count < 64)
      nodes[count++] = argv[i];
  }
  if (count == 0 || concurrency < 1) {
    fprintf(stderr, "usage: c_workload [--concurrency N] [--duration S] ADDRESS...\n");
    return 2;
  }
  zipf_init(keys);
  if (dynamo_client_open(nodes, count, NULL, &client) != DYNAMO_OK) {
    fprintf(stderr, "open: %s\n", dynamo_last_error_message());
    return 1;
  }
  slot *slots = calloc((size_t)concurrency, sizeof *slots);
  atomic_store(&in_flight, concurrency);
  for (int i = 0; i < concurrency; i++) {
    slots[i].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    start_op(&slots[i]);
  }
  struct timespec pause = {(time_t)warmup, (long)((warmup - (long)warmup) * 1e9)};
  nanosleep(&pause, NULL);
  atomic_store(&measuring, 1);
  double t0 = now_s();
  struct timespec run = {(time_t)duration, (long)((duration - (long)duration) * 1e9)};
  nanosleep(&run, NULL);
  atomic_store(&measuring, 0);
  double elapsed = now_s() - t0;
  atomic_store(&stopping, 1);
  while (atomic_load(&in_flight) > 0) {
    struct timespec t = {0, 1000000};
    nanosleep(&t, NULL);
  }
  uint64_t ops = atomic_load(&done_ops);
  printf("{\"ops\": %llu, \"seconds\": %.3f, \"ops_per_sec\": %.1f, \"requests_per_sec\": %.1f, "
         "\"errors\": %llu, \"p50_us\": %.0f, \"p99_us\": %.0f, \"p999_us\": %.0f, "
         "\"concurrency\": %d}\n",
         (unsigned long long)ops, elapsed, (double)ops / elapsed,
         (double)atomic_load(&requests) / elapsed, (unsigned long long)atomic_load(&errors),
         percentile(0.5), percentile(0.99), percentile(0.999), concurrency);
  dynamo_client_close(client);
  free(slots);
  return 0;
}
