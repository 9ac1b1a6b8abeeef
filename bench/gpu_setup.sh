#!/usr/bin/env bash
# Packages bench/gpu.sh needs on a CUDA machine that cannot reach a package index but has
# python3 with a CUDA torch (the lent H100/H200 image: Python 3.12, torch 2.11+cu130).
#   bash bench/gpu_setup.sh pack   (here, with a package index) writes WHEELS (default .gpu):
#       the spconv-cu126 2.3.8 / cumm-cu126 0.7.11 cp312 wheels (spconv-cu120 2.3.6 has no
#       cp312 wheel; the API is the same) and their small needs (pccm ccimport fire
#       termcolor lark zarr numcodecs donfig google-crc32c), unpacked and xz-packed into three
#       tarballs, 45 MB together: the wheels themselves are 107 MB, over the 64 MiB a lease
#       carries with the working tree (about 18 MB).
#   bash bench/gpu_setup.sh        (there) unpacks them into SITE (default /tmp/site);
#       with TORCH_CLUSTER=1 and a torch-cluster 1.6.3 sdist in WHEELS, also builds it for
#       the CPU (minutes of the lease). Without it sparse_det/vote_graph.py does
#       torch-cluster's two operations in torch on every device.
# Then:  PYTHONPATH=/tmp/site:$PWD PY=python3 bash bench/gpu.sh $OUT
set -euo pipefail
WHEELS=${WHEELS:-.gpu}
SITE=${SITE:-/tmp/site}
if [ "${1:-}" = pack ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$tmp/whl" spconv-cu126==2.3.8 cumm-cu126==0.7.11 \
    pccm==0.4.16 ccimport==0.4.4 fire==0.7.1 termcolor==3.3.0 lark==1.3.1 zarr==3.1.6 \
    numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
  mkdir -p "$WHEELS" "$tmp/spconv" "$tmp/cumm" "$tmp/small"
  for w in "$tmp"/whl/*.whl; do
    case "$(basename "$w")" in
      spconv*) d=spconv ;; cumm*) d=cumm ;; *) d=small ;;
    esac
    unzip -q -o "$w" -d "$tmp/$d"
  done
  for d in spconv cumm small; do
    tar -C "$tmp/$d" -cf - . | xz -9e -T0 > "$WHEELS/$d.tar.xz"
  done
  rm -rf "$tmp"
  ls -la "$WHEELS"
  exit 0
fi
mkdir -p "$SITE"
for t in "$WHEELS"/*.tar.xz; do tar -xJf "$t" -C "$SITE" & done
if [ -n "${TORCH_CLUSTER:-}" ]; then  # a serial build did not finish in 8 min: in parallel
  printf '[build_ext]\nparallel = %s\n' "$(nproc)" > /tmp/build.cfg
  DIST_EXTRA_CONFIG=/tmp/build.cfg FORCE_ONLY_CPU=1 python3 -m pip install -q --no-deps \
    --no-build-isolation --no-index --no-compile --target "$SITE" \
    "$WHEELS"/torch_cluster-*.tar.gz
fi
wait
PYTHONPATH="$SITE" python3 -c "import spconv, zarr; print('spconv', spconv.__version__, \
'zarr', zarr.__version__)"
