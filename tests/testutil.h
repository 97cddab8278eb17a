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

/* A temporary copy of a folder of plain files (a model folder a test
 * changes); (transfer full) its path, remove with remove_flat_dir. */
char *copy_flat_dir (const char *src);
/* Removes a folder of plain files (a test's temporary copy). */
void remove_flat_dir (const char *dir);

/* Backend under test, named for messages. */
extern const BlipBackend test_backends[2];
const char *backend_name (BlipBackend b);

/* The geometry unlike the fixtures' that the geometry and forward-agree
 * tests use: every width, head count and depth, the image and patch sizes
 * differ from the fixtures', and eos != sep as in BLIP's configs. */
enum { ODD_DV = 40, ODD_HV = 5, ODD_LV = 3, ODD_IV = 72, ODD_IMG = 30, ODD_PATCH = 6, ODD_D = 24,
       ODD_H = 3, ODD_IT = 40, ODD_POS = 30, ODD_V = 240, ODD_E = 8 };
BlipConfig odd_geometry_config (int text_layers);

#endif
