/* cmem: a small in-memory storage engine written in C (a sorted array under a
 * read-write lock), plugged into libdynamo with dynamo_engine_register. It is the
 * example of the engine callback table and the engine the conformance suite runs
 * against in the C tests. */
#ifndef CMEM_ENGINE_H
#define CMEM_ENGINE_H

#include "dynamo.h"

/* The callback table of the cmem engine. */
extern const dynamo_engine_ops cmem_ops;

/* How many instances are open now (opened minus closed). */
int cmem_open_instances(void);

#endif
