/* The model identity: one SHA-256 over the canonical config, the
 * tokenizer and every bound tensor (all of a small one, a sample of a large
 * one), so that an index of features can tell whether it was made by the
 * model now loaded without rereading or hashing 900 MB of weights. */
#include "model-identity.h"

#include "tokenizer-private.h"

#include <stdarg.h>
#include <string.h>

/* Changing what is hashed, or how, changes this, so identities of one
 * scheme are never compared with another's. */
#define IDENTITY_SCHEME "blip-model-identity 1\n"

/* A tensor up to WHOLE bytes is hashed whole; a larger one by its first
 * and last EDGE bytes and SAMPLE bytes at every multiple of STRIDE between
 * them: about 0.4% of a large matrix, and every tensor takes part. */
#define WHOLE (64 * 1024)
#define EDGE (16 * 1024)
#define STRIDE (64 * 1024)
#define SAMPLE 256

/* Lower-casing, accent stripping, control characters, CJK spacing, the
 * longest word and WordPiece continuation all change the ids of this text
 * (where the vocabulary has its pieces), so the tokenizer's settings count
 * even though only its vocabulary is public. */
static const char probe[] =
    "Identity PROBE: a Café in ZÜRICH, naïve façades\t\x01 北京 東京 "
    "unbelievably-running jumped 1234 x"
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    " [SEP] [MASK] [ENC] [DEC]";

static void
add_text (GChecksum *sum, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
add_text (GChecksum *sum, const char *format, ...)
{
  va_list ap;
  va_start (ap, format);
  char *s = g_strdup_vprintf (format, ap);
  va_end (ap);
  g_checksum_update (sum, (const guchar *) s, strlen (s));
  g_free (s);
}

/* Locale-independent and exact: the shortest text that reads back the same
 * double would do, %.17g always does. */
static void
add_double (GChecksum *sum, const char *name, double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  add_text (sum, "%s=%s\n", name, g_ascii_formatd (buf, sizeof buf, "%.17g", v));
}

static void
add_config (GChecksum *sum, const BlipConfig *c)
{
  const BlipVisionConfig *v = &c->vision;
  const BlipTextConfig *t = &c->text;
  add_text (sum, "vision.hidden_size=%d\nvision.intermediate_size=%d\nvision.num_layers=%d\n"
            "vision.num_heads=%d\nvision.image_size=%d\nvision.patch_size=%d\n"
            "vision.num_channels=%d\n",
            v->hidden_size, v->intermediate_size, v->num_layers, v->num_heads,
            v->image_size, v->patch_size, v->num_channels);
  add_double (sum, "vision.layer_norm_eps", v->layer_norm_eps);
  add_text (sum, "text.vocab_size=%d\ntext.hidden_size=%d\ntext.intermediate_size=%d\n"
            "text.num_layers=%d\ntext.num_heads=%d\ntext.max_position_embeddings=%d\n"
            "text.encoder_hidden_size=%d\n",
            t->vocab_size, t->hidden_size, t->intermediate_size, t->num_layers,
            t->num_heads, t->max_position_embeddings, t->encoder_hidden_size);
  add_double (sum, "text.layer_norm_eps", t->layer_norm_eps);
  add_text (sum, "text.pad_token_id=%d\ntext.bos_token_id=%d\ntext.eos_token_id=%d\n"
            "text.sep_token_id=%d\nimage_text_hidden_size=%d\n",
            t->pad_token_id, t->bos_token_id, t->eos_token_id, t->sep_token_id,
            c->image_text_hidden_size);
  for (int i = 0; i < 3; i++) {
    char name[32];
    g_snprintf (name, sizeof name, "image_mean[%d]", i);
    add_double (sum, name, c->image_mean[i]);
    g_snprintf (name, sizeof name, "image_std[%d]", i);
    add_double (sum, name, c->image_std[i]);
  }
}

static void
add_tokenizer (GChecksum *sum, const BlipTokenizer *tok)
{
  const int n = blip_tokenizer_vocab_size (tok);
  add_text (sum, "vocab=%d\n", n);
  /* length-prefixed, since a token of tokenizer.json may hold any byte;
   * a hole in the ids is not the empty token */
  for (int id = 0; id < n; id++) {
    const char *token = blip_tokenizer_token (tok, id);
    if (token) {
      add_text (sum, "%zu:", strlen (token));
      g_checksum_update (sum, (const guchar *) token, strlen (token));
    } else
      g_checksum_update (sum, (const guchar *) "-", 1);
  }
  add_text (sum, "\ncls=%d sep=%d pad=%d unk=%d\n", blip_tokenizer_special_id (tok, "cls"),
            blip_tokenizer_special_id (tok, "sep"), blip_tokenizer_special_id (tok, "pad"),
            blip_tokenizer_special_id (tok, "unk"));
  GArray *ids = blip_tokenizer_encode (tok, probe, TRUE, NULL);
  if (ids) {
    add_text (sum, "probe=%u:", ids->len);
    for (guint i = 0; i < ids->len; i++)
      add_text (sum, "%d,", g_array_index (ids, gint32, i));
    g_array_unref (ids);
  }
  add_text (sum, "\n");
}

GChecksum *
blip_model_identity_begin (const BlipConfig *config, const BlipTokenizer *tok)
{
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  add_text (sum, IDENTITY_SCHEME);
  add_config (sum, config);
  add_tokenizer (sum, tok);
  return sum;
}

void
blip_model_identity_add_tensor (GChecksum *sum, const BlipTensorInfo *t)
{
  add_text (sum, "tensor %zu:%s %s [", strlen (t->name), t->name, blip_dtype_name (t->dtype));
  for (int i = 0; i < t->ndim; i++)
    add_text (sum, "%s%" G_GINT64_FORMAT, i ? "," : "", t->shape[i]);
  add_text (sum, "] %zu\n", t->nbytes);
  const gsize n = t->nbytes;
  if (n <= WHOLE) {
    g_checksum_update (sum, t->data, n);
    return;
  }
  g_checksum_update (sum, t->data, EDGE);
  for (gsize o = STRIDE; o + SAMPLE <= n - EDGE; o += STRIDE)
    g_checksum_update (sum, t->data + o, SAMPLE);
  g_checksum_update (sum, t->data + n - EDGE, EDGE);
}

char *
blip_model_identity_finish (GChecksum *sum)
{
  char *hex = g_strdup (g_checksum_get_string (sum));
  g_checksum_free (sum);
  return hex;
}
