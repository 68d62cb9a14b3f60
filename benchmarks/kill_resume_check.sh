#!/bin/bash
# Manual check (issue #4): kill -9 a real training three times at random moments, resume each time,
# and compare the final weights with an uninterrupted run.
set -u
C=${1:-$(dirname "$0")/../../shared/corpora/tinyshakespeare.txt}
D=${TMPDIR:-/tmp}/charrnn-killcheck; rm -rf $D; mkdir -p $D
ARGS="--val-frac 0.1 --test-frac 0 --max-steps 120 --save-every 10 --eval-every 40 --checkpoint-dir $D"
hash() { python3 -c "
import hashlib,sys; from charrnn.model.checkpoint import load_checkpoint
c=load_checkpoint(sys.argv[1]); h=hashlib.sha256()
for k in sorted(c['model']): h.update(c['model'][k].numpy().tobytes())
print(c['train_state']['step'], h.hexdigest()[:16])" $1; }
charrnn train $C $ARGS --name ref 2>/dev/null
echo "uninterrupted: $(hash $D/ref/last.pt)"
charrnn train $C $ARGS --name killed 2>/dev/null & pid=$!
for i in 1 2 3; do
  s=$(python3 -c "import random; print(round(random.uniform(6, 16), 2))")
  sleep $s; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  echo "kill -9 #$i after ${s}s: last.pt at $(hash $D/killed/last.pt)"
  charrnn train --resume $D/killed 2>/dev/null & pid=$!
done
wait $pid; echo "resumed run exit $?"
echo "interrupted:   $(hash $D/killed/last.pt)"
