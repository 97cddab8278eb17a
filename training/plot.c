/* blip-train plot: the loss curves of metrics.jsonl (and the learning rate)
 * drawn to a PNG with cairo. */
#include "plot.h"
#include "../core/file-read.h"
#include "json-fields.h"

#include <cairo.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>

typedef struct {
  const char *key, *label;
  double r, g, b;
} Series;

static const Series series[] = {
  { "itc", "ITC", 0.12, 0.47, 0.71 }, { "itm", "ITM", 1.0, 0.5, 0.05 },
  { "lm", "LM", 0.17, 0.63, 0.17 }, { "lr", "learning rate (right axis)", 0.5, 0.5, 0.5 },
};

gboolean
plot_metrics (const char *metrics, const char *png, int smooth, GError **error)
{
  char *text = NULL;
  if (!blip_regular_file_read (metrics, &text, NULL, error))
    return FALSE;
  GArray *cols[G_N_ELEMENTS (series) + 1];
  for (guint k = 0; k <= G_N_ELEMENTS (series); k++)
    cols[k] = g_array_new (FALSE, FALSE, sizeof (double));
  char **lines = g_strsplit (text, "\n", -1);
  g_free (text);
  JsonParser *parser = json_parser_new ();
  for (char **l = lines; *l; l++) {
    if (!**l || !blip_json_load_data (parser, *l, strlen (*l), NULL)
        || !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
      continue;
    /* a row with a field of the wrong type is skipped with the reason;
     * a missing or null (non-finite) loss is a gap in its curve */
    JsonObject *o;
    GError *e = NULL;
    double row[G_N_ELEMENTS (series) + 1];
    gboolean ok = field_object (json_parser_get_root (parser), "the row", &o, &e)
        && field_number (o, "step", FIELD_REQUIRED, FALSE, &row[G_N_ELEMENTS (series)], &e);
    for (guint k = 0; ok && k < G_N_ELEMENTS (series); k++) {
      row[k] = NAN;
      ok = field_number (o, series[k].key, FIELD_OPTIONAL, TRUE, &row[k], &e);
    }
    if (!ok) {
      g_warning ("%s: line %d skipped: %s", metrics, (int) (l - lines) + 1, e->message);
      g_error_free (e);
      continue;
    }
    for (guint k = 0; k <= G_N_ELEMENTS (series); k++)
      g_array_append_val (cols[k], row[k]);
  }
  g_object_unref (parser);
  g_strfreev (lines);
  const guint n = cols[G_N_ELEMENTS (series)]->len;
  gboolean ok = n > 0;
  if (!ok)
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s: no metrics rows", metrics);

  const int W = 960, H = 540, L = 70, R = 90, T = 40, B = 60;
  cairo_surface_t *s = cairo_image_surface_create (CAIRO_FORMAT_RGB24, W, H);
  cairo_t *cr = cairo_create (s);
  cairo_set_source_rgb (cr, 1, 1, 1);
  cairo_paint (cr);
  if (ok) {
    const double *steps = (const double *) cols[G_N_ELEMENTS (series)]->data;
    double xmax = MAX (steps[n - 1], 1), ymax = 0, lrmax = 0;
    /* an exponential moving average: per-step losses are noisy */
    const double k = 2.0 / (MAX (smooth, 1) + 1);
    for (guint c = 0; c < 3; c++) {
      double *v = (double *) cols[c]->data, avg = NAN;
      for (guint i = 0; i < n; i++) {
        if (isnan (v[i]))
          continue;
        avg = isnan (avg) ? v[i] : (1 - k) * avg + k * v[i];
        v[i] = avg;
        ymax = MAX (ymax, avg);
      }
    }
    for (guint i = 0; i < n; i++)
      if (!isnan (((double *) cols[3]->data)[i]))
        lrmax = MAX (lrmax, ((double *) cols[3]->data)[i]);
    ymax = ymax > 0 ? ymax * 1.05 : 1;
    lrmax = lrmax > 0 ? lrmax * 1.05 : 1;
    /* axes, ticks and labels */
    cairo_set_source_rgb (cr, 0, 0, 0);
    cairo_set_line_width (cr, 1);
    cairo_rectangle (cr, L, T, W - L - R, H - T - B);
    cairo_stroke (cr);
    cairo_select_font_face (cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size (cr, 12);
    char label[64];
    for (int t = 0; t <= 5; t++) {
      const double x = L + (W - L - R) * t / 5.0, y = H - B - (H - T - B) * t / 5.0;
      g_snprintf (label, sizeof label, "%.0f", xmax * t / 5);
      cairo_move_to (cr, x - 10, H - B + 18);
      cairo_show_text (cr, label);
      g_snprintf (label, sizeof label, "%.2f", ymax * t / 5);
      cairo_move_to (cr, 20, y + 4);
      cairo_show_text (cr, label);
      g_snprintf (label, sizeof label, "%.1e", lrmax * t / 5);
      cairo_move_to (cr, W - R + 6, y + 4);
      cairo_show_text (cr, label);
    }
    cairo_move_to (cr, W / 2.0 - 15, H - 15);
    cairo_show_text (cr, "step");
    g_snprintf (label, sizeof label, "training losses (moving average over %d steps)", MAX (smooth, 1));
    cairo_move_to (cr, L, T - 14);
    cairo_show_text (cr, label);
    for (guint c = 0; c < G_N_ELEMENTS (series); c++) {
      const double *v = (const double *) cols[c]->data, top = c == 3 ? lrmax : ymax;
      cairo_set_source_rgb (cr, series[c].r, series[c].g, series[c].b);
      cairo_set_line_width (cr, c == 3 ? 1 : 2);
      gboolean started = FALSE;
      for (guint i = 0; i < n; i++) {
        if (isnan (v[i]))
          continue;
        const double x = L + (W - L - R) * steps[i] / xmax, y = H - B - (H - T - B) * v[i] / top;
        if (started)
          cairo_line_to (cr, x, y);
        else
          cairo_move_to (cr, x, y);
        started = TRUE;
      }
      cairo_stroke (cr);
      cairo_rectangle (cr, W - R - 200, T + 12 + 18 * c, 14, 4);
      cairo_fill (cr);
      cairo_set_source_rgb (cr, 0, 0, 0);
      cairo_move_to (cr, W - R - 180, T + 18 + 18 * c);
      cairo_show_text (cr, series[c].label);
    }
    cairo_status_t st = cairo_surface_write_to_png (s, png);
    if (st != CAIRO_STATUS_SUCCESS) {
      g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "%s: %s", png, cairo_status_to_string (st));
      ok = FALSE;
    }
  }
  cairo_destroy (cr);
  cairo_surface_destroy (s);
  for (guint k = 0; k <= G_N_ELEMENTS (series); k++)
    g_array_unref (cols[k]);
  return ok;
}
