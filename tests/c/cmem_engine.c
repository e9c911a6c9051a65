#include "cmem_engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  uint8_t *key;
  size_t key_len;
  uint8_t *value;
  size_t value_len;
} entry;

typedef struct {
  pthread_rwlock_t lock;
  entry *entries;
  size_t len, cap;
  uint64_t bytes;
} cmem;

static atomic_int open_instances;

int cmem_open_instances(void) { return atomic_load(&open_instances); }

static int cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
  size_t n = al < bl ? al : bl;
  int c = n ? memcmp(a, b, n) : 0;
  if (c) return c;
  return al < bl ? -1 : al > bl ? 1 : 0;
}

/* The first index whose key is >= key. */
static size_t lower_bound(const cmem *m, const uint8_t *key, size_t len) {
  size_t lo = 0, hi = m->len;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (cmp(m->entries[mid].key, m->entries[mid].key_len, key, len) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static uint8_t *copy(const uint8_t *p, size_t n) {
  uint8_t *c = malloc(n ? n : 1);
  if (c && n) memcpy(c, p, n);
  return c;
}

/* Callers hold the write lock. */
static dynamo_status put_locked(cmem *m, const uint8_t *k, size_t kl, const uint8_t *v,
                                size_t vl) {
  size_t i = lower_bound(m, k, kl);
  uint8_t *nv = copy(v, vl);
  if (!nv) return DYNAMO_ERR_INTERNAL;
  if (i < m->len && cmp(m->entries[i].key, m->entries[i].key_len, k, kl) == 0) {
    m->bytes -= m->entries[i].value_len;
    free(m->entries[i].value);
    m->entries[i].value = nv;
    m->entries[i].value_len = vl;
    m->bytes += vl;
    return DYNAMO_OK;
  }
  if (m->len == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    entry *e = realloc(m->entries, cap * sizeof *e);
    if (!e) {
      free(nv);
      return DYNAMO_ERR_INTERNAL;
    }
    m->entries = e;
    m->cap = cap;
  }
  uint8_t *nk = copy(k, kl);
  if (!nk) {
    free(nv);
    return DYNAMO_ERR_INTERNAL;
  }
  memmove(&m->entries[i + 1], &m->entries[i], (m->len - i) * sizeof(entry));
  m->entries[i] = (entry){nk, kl, nv, vl};
  m->len++;
  m->bytes += kl + vl;
  return DYNAMO_OK;
}

static void del_locked(cmem *m, const uint8_t *k, size_t kl) {
  size_t i = lower_bound(m, k, kl);
  if (i < m->len && cmp(m->entries[i].key, m->entries[i].key_len, k, kl) == 0) {
    m->bytes -= m->entries[i].key_len + m->entries[i].value_len;
    free(m->entries[i].key);
    free(m->entries[i].value);
    memmove(&m->entries[i], &m->entries[i + 1], (m->len - i - 1) * sizeof(entry));
    m->len--;
  }
}

static dynamo_status cmem_open(void *user, const char *path, void **instance) {
  (void)user;
  (void)path; /* in memory: nothing on disk */
  cmem *m = calloc(1, sizeof *m);
  if (!m) return DYNAMO_ERR_INTERNAL;
  pthread_rwlock_init(&m->lock, NULL);
  atomic_fetch_add(&open_instances, 1);
  *instance = m;
  return DYNAMO_OK;
}

static dynamo_status cmem_get(void *instance, const uint8_t *key, size_t key_len,
                              dynamo_value_sink sink, void *sink_ctx) {
  cmem *m = instance;
  pthread_rwlock_rdlock(&m->lock);
  size_t i = lower_bound(m, key, key_len);
  if (i < m->len && cmp(m->entries[i].key, m->entries[i].key_len, key, key_len) == 0)
    sink(sink_ctx, m->entries[i].value, m->entries[i].value_len);
  pthread_rwlock_unlock(&m->lock);
  return DYNAMO_OK;
}

static dynamo_status cmem_put(void *instance, const uint8_t *key, size_t key_len,
                              const uint8_t *value, size_t value_len) {
  cmem *m = instance;
  pthread_rwlock_wrlock(&m->lock);
  dynamo_status st = put_locked(m, key, key_len, value, value_len);
  pthread_rwlock_unlock(&m->lock);
  return st;
}

static dynamo_status cmem_del(void *instance, const uint8_t *key, size_t key_len) {
  cmem *m = instance;
  pthread_rwlock_wrlock(&m->lock);
  del_locked(m, key, key_len);
  pthread_rwlock_unlock(&m->lock);
  return DYNAMO_OK;
}

static dynamo_status cmem_batch(void *instance, const dynamo_engine_op *ops, size_t count) {
  cmem *m = instance;
  /* All under one write lock: no reader sees part of the batch. (An allocation failure
   * halfway would break atomicity; a real engine would stage the batch first.) */
  pthread_rwlock_wrlock(&m->lock);
  dynamo_status st = DYNAMO_OK;
  for (size_t i = 0; i < count && st == DYNAMO_OK; i++) {
    if (ops[i].is_delete)
      del_locked(m, ops[i].key, ops[i].key_len);
    else
      st = put_locked(m, ops[i].key, ops[i].key_len, ops[i].value, ops[i].value_len);
  }
  pthread_rwlock_unlock(&m->lock);
  return st;
}

static dynamo_status cmem_scan(void *instance, const uint8_t *start, size_t start_len,
                               const uint8_t *end, size_t end_len, bool has_end, bool reverse,
                               dynamo_scan_visitor visit, void *visit_ctx) {
  cmem *m = instance;
  pthread_rwlock_rdlock(&m->lock);
  size_t lo = lower_bound(m, start, start_len);
  size_t hi = has_end ? lower_bound(m, end, end_len) : m->len;
  if (!reverse) {
    for (size_t i = lo; i < hi; i++)
      if (!visit(visit_ctx, m->entries[i].key, m->entries[i].key_len, m->entries[i].value,
                 m->entries[i].value_len))
        break;
  } else {
    for (size_t i = hi; i > lo; i--)
      if (!visit(visit_ctx, m->entries[i - 1].key, m->entries[i - 1].key_len,
                 m->entries[i - 1].value, m->entries[i - 1].value_len))
        break;
  }
  pthread_rwlock_unlock(&m->lock);
  return DYNAMO_OK;
}

static dynamo_status cmem_size(void *instance, uint64_t *bytes) {
  cmem *m = instance;
  pthread_rwlock_rdlock(&m->lock);
  *bytes = m->bytes;
  pthread_rwlock_unlock(&m->lock);
  return DYNAMO_OK;
}

static void cmem_close(void *instance) {
  cmem *m = instance;
  for (size_t i = 0; i < m->len; i++) {
    free(m->entries[i].key);
    free(m->entries[i].value);
  }
  free(m->entries);
  pthread_rwlock_destroy(&m->lock);
  free(m);
  atomic_fetch_sub(&open_instances, 1);
}

const dynamo_engine_ops cmem_ops = {
    .open = cmem_open,
    .get = cmem_get,
    .put = cmem_put,
    .del = cmem_del,
    .batch = cmem_batch,
    .scan = cmem_scan,
    .sync = NULL,
    .size = cmem_size,
    .close = cmem_close,
};
