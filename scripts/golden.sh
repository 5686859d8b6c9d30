#!/bin/bash
# One run of what a redesign must not change (scripts/golden.py reads it): bash scripts/golden.sh REPO OUT
set -x
# REPO: a checkout with .venv; the authors' weights in /work/shared/weights (or $MOBILESEG_WEIGHTS_DIR)
cd "$1"
G=$2
export MOBILESEG_WEIGHTS_DIR=${MOBILESEG_WEIGHTS_DIR:-/work/shared/weights}
B=.venv/bin
mkdir -p $G
if [ -f mobileseg/export/matrix.py ]; then MATRIX="-m mobileseg matrix"; else MATRIX="-m mobileseg.verify.matrix"; fi  # before issue 24
# the golden data covers the five trained models (the structure-only networks of issue 28 came after it)
if [ -f mobileseg/zoo/structure_only.py ]; then MATRIX="$MATRIX -m sinet -m extremec3net -m sinet-cityscapes -m c3net -m c3netv2"; fi
$B/python $MATRIX --precision int8 --jobs 2 --no-cache --artifacts $G/artifacts --out $G/parity.json --markdown $G/parity.md > $G/parity.log 2>&1
$B/python -m mobileseg export sinet -t all --out $G/sinet > $G/sinet.log 2>&1
$B/python -m mobileseg vos train-gate --out $G/vos-weights.pt --gate-steps 60 --segmentation-steps 10 --backbone-steps 40 --gate-sequences 4 > $G/vos-train.log 2>&1
$B/python -m mobileseg vos export --weights $G/vos-weights.pt -t all --out $G/vos > $G/vos-export.log 2>&1
$B/python -m mobileseg vos verify $G/vos --out $G/vos-verify.json > $G/vos-verify.log 2>&1
$B/python -m mobileseg vos bench $G/vos --length 16 --out $G/vos-bench.json > $G/vos-bench.log 2>&1
echo done > $G/DONE
