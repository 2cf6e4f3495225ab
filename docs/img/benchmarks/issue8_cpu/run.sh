#!/bin/bash
# CPU no-regression: bench.py of main before issue 8 (358277b) and of the current main, interleaved.
export OPENBLAS_NUM_THREADS=1 MPLBACKEND=Agg
cd /work/cpu_regress
for i in 1 2 3; do
  for side in before after; do
    if [ $side = before ]; then d=/work/wt/before; py=/work/wt/before/.venv/bin/python; else d=/work/main; py=/work/venv/bin/python; fi
    (cd $d && $py benchmarks/bench.py --no-peers --repeats 3 --json /work/cpu_regress/$side-$i.json > /work/cpu_regress/$side-$i.log 2>&1)
    echo "$side $i done $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
