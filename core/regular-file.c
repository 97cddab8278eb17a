/* Opening files that come from outside.  Model folders, images, annotation
 * files and checkpoints are named by users: a FIFO, a device or a folder in
 * their place must be an error at once, not a read that waits forever for a
 * writer.  The file is opened without blocking and then checked with fstat,
 * so it cannot be swapped between the check and the open. */
#include "blip-private.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int
blip_regular_file_open (const char *path, GError **error)
{
  /* O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer */
  int fd = g_open (path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, g_strerror (e));
    return -1;
  }
  struct stat st;
  if (fstat (fd, &st) != 0) {
    int e = errno;
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, g_strerror (e));
    close (fd);
    return -1;
  }
  if (!S_ISREG (st.st_mode)) {
    const char *kind = S_ISFIFO (st.st_mode) ? "a FIFO"
        : S_ISDIR (st.st_mode) ? "a folder"
        : S_ISCHR (st.st_mode) || S_ISBLK (st.st_mode) ? "a device"
        : S_ISSOCK (st.st_mode) ? "a socket" : "not a file";
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s is not a regular file (%s)", path, kind);
    close (fd);
    return -1;
  }
  /* regular files ignore O_NONBLOCK; stdio on the descriptor should not see it */
  int flags = fcntl (fd, F_GETFL);
  if (flags >= 0)
    fcntl (fd, F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

GMappedFile *
blip_regular_file_map (const char *path, GError **error)
{
  int fd = blip_regular_file_open (path, error);
  if (fd < 0)
    return NULL;
  GError *err = NULL;
  GMappedFile *map = g_mapped_file_new_from_fd (fd, FALSE, &err);
  close (fd);
  if (!map) {
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, err->message);
    g_error_free (err);
  }
  return map;
}

gboolean
blip_regular_file_read (const char *path, char **contents, gsize *length, GError **error)
{
  GMappedFile *map = blip_regular_file_map (path, error);
  if (!map)
    return FALSE;
  const gsize len = g_mapped_file_get_length (map);
  char *text = g_malloc (len + 1);
  if (len)
    memcpy (text, g_mapped_file_get_contents (map), len);
  text[len] = 0;
  g_mapped_file_unref (map);
  *contents = text;
  if (length)
    *length = len;
  return TRUE;
}

FILE *
blip_regular_file_fopen (const char *path, GError **error)
{
  int fd = blip_regular_file_open (path, error);
  if (fd < 0)
    return NULL;
  FILE *f = fdopen (fd, "rb");
  if (!f) {
    int e = errno;
    g_set_error (error, BLIP_ERROR, BLIP_ERROR_IO, "%s: %s", path, g_strerror (e));
    close (fd);
  }
  return f;
}
