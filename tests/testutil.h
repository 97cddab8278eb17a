/* Helpers shared by the test programs: fixture paths, reference tensors,
 * comparisons that print the tensor, the index and both values. */
#ifndef BLIP_TESTUTIL_H
#define BLIP_TESTUTIL_H

#include <blip.h>
#include <json-glib/json-glib.h>
#include "../core/safetensors.h"

/* The fixture folder (tests/fixtures/blip_tiny_a), or a file inside it. */
char *fixture_path (const char *name);

/* A reference tensor as float32 (transfer full, g_free); aborts the test if absent. */
float *ref_tensor (BlipSafetensors *st, const char *name, int64_t *numel);
int32_t *ref_ids (BlipSafetensors *st, const char *name, int64_t *numel);

/* Largest absolute difference; fails the test (with the index and both
 * values) when it exceeds tol.  Returns the error. */
double assert_close (const char *what, const float *got, const float *ref, int64_t n, double tol);

JsonNode *load_json (const char *path);

/* Backend under test, named for messages. */
extern const BlipBackend test_backends[2];
const char *backend_name (BlipBackend b);

#endif
