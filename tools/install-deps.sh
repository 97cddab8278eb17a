#!/usr/bin/env bash
# Installs everything gst-blip builds and runs with (Debian 12, as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  build-essential meson ninja-build pkg-config cmake \
  libglib2.0-dev libjson-glib-dev libdnnl-dev libopenblas-dev \
  libpng-dev libjpeg-dev libwebp-dev libcairo2-dev \
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
  gstreamer1.0-plugins-bad gstreamer1.0-x gettext valgrind clang libclang-rt-14-dev \
  python3-numpy python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 \
  libopenmpi-dev openmpi-bin \
  libsqlite3-dev sqlite3 libpq-dev postgresql-15 \
  chromium time
