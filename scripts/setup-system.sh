#!/usr/bin/env bash
# Installs the system pieces onnx-graft's tests and CLI need on Debian 12 / Ubuntu:
# a Vulkan software driver new enough for Dawn (Mesa lavapipe from bookworm-backports)
# and ONNX's conformance data. Idempotent: does nothing when both are present.
set -euo pipefail

need_vulkan=1
need_testdata=1
if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -qv '^22\.'; then
  need_vulkan=0
fi
DIGITS_CSV=/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz
# Test data: ONNX's conformance cases, Fashion-MNIST, darknet's sample photographs, and Pillow
# (python3-pil: the libjpeg-turbo decoding and resizing the pixel tests compare with), and ONNX's
# own checker with numpy (python3-onnx: the codec's output is checked by it; numpy writes and
# reads the safetensors interchange files of the checkpoint tests), and Chromium (WebGPU on its
# bundled SwiftShader: the browser run of the portable cases, npm run test:browser).
[ -d /usr/share/libonnx-testdata/data/node ] && [ -d /usr/share/datasets/fashion-mnist ] \
  && [ -f /usr/share/darknet/data/dog.jpg ] && command -v gdk-pixbuf-csource >/dev/null \
  && [ -d /usr/lib/python3/dist-packages/PIL ] && [ -d /usr/lib/python3/dist-packages/onnx ] \
  && [ -d /usr/lib/python3/dist-packages/numpy ] && [ -f "$DIGITS_CSV" ] && [ -x /usr/bin/chromium ] && need_testdata=0
[ "${GRAFT_SKIP_TESTDATA:-0}" = 1 ] && need_testdata=0
if [ $need_vulkan = 0 ] && [ $need_testdata = 0 ]; then exit 0; fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "setup-system: run as root (or install sudo): it needs apt-get" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive

. /etc/os-release
if [ $need_vulkan = 1 ]; then
  if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
    # Debian 12's own Mesa 22.3 is refused by Dawn; backports carries Mesa 25.
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo 'deb http://deb.debian.org/debian bookworm-backports main' | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
    fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
  else
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
  fi
fi
if [ $need_testdata = 1 ]; then
  [ $need_vulkan = 1 ] || $SUDO apt-get update -qq
  # libgdk-pixbuf2.0-bin and python3-pil: libjpeg-turbo, the independent JPEG decoders the decode
  # tests compare with (Pillow also as the reference for resizing).
  $SUDO apt-get install -y -qq libonnx-testdata dataset-fashion-mnist libgdk-pixbuf2.0-bin python3-pil python3-onnx python3-numpy >/dev/null \
    || echo "setup-system: libonnx-testdata, dataset-fashion-mnist, python3-pil or python3-onnx not available from apt; the tests will say what is missing" >&2
  if [ ! -x /usr/bin/chromium ]; then
    $SUDO apt-get install -y -qq chromium >/dev/null \
      || echo "setup-system: chromium not available from apt; npm run test:browser will say it is missing" >&2
  fi
  if [ ! -f /usr/share/darknet/data/dog.jpg ]; then
    # Only darknet's sample JPEGs are wanted; installing the package would pull in ~340
    # packages (OpenCV, Qt, GDAL), so unpack just those files from its .deb.
    tmp=$(mktemp -d)
    if (cd "$tmp" && apt-get download darknet >/dev/null 2>&1); then
      dpkg-deb --fsys-tarfile "$tmp"/darknet_*.deb | $SUDO tar -x -C / --wildcards './usr/share/darknet/data/*.jpg'
    else
      echo "setup-system: could not download darknet's sample photographs; the decode tests will say so" >&2
    fi
    rm -rf "$tmp"
  fi
  if [ ! -f "$DIGITS_CSV" ]; then
    # The digits test compares the copy in models-onnx/samples/ with scikit-learn's original;
    # only that file is wanted, not python3-sklearn's numpy/scipy dependencies.
    tmp=$(mktemp -d)
    if (cd "$tmp" && apt-get download python3-sklearn >/dev/null 2>&1); then
      dpkg-deb --fsys-tarfile "$tmp"/python3-sklearn_*.deb | $SUDO tar -x -C / ".$DIGITS_CSV"
    else
      echo "setup-system: could not download python3-sklearn's digits.csv.gz; the digits test will say so" >&2
    fi
    rm -rf "$tmp"
  fi
fi
