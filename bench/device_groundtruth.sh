#!/usr/bin/env bash
# The long-recipe ground truths on the lent GPU machine (issue 13: does more training per job lift the
# noise ceiling towards the 0.6 rank fidelity needs?). Prepared here, run there in ONE call of the device tool:
#   make device-carry          # here: the wheels the GPU image lacks (.whl/) and the dataset files (.fmnist/)
#   device run: command "bash bench/device_groundtruth.sh 480", carry [".whl", ".fmnist"], timeout_s 570
# then here: unpack the records it returns and rewrite each JSON from them (nothing is trained again):
#   tar xzf <files_at>/groundtruth_long.tgz
#   python -m dfnas_pl groundtruth --config studies/layerwise_groundtruth/groundtruth_mobilenetv2_long.yaml --limit 0
# Usage: device_groundtruth.sh [budget seconds] [config ...]; the configs run in turn (default: MobileNetV2,
# whose short recipe had the larger spread, then ShuffleNetV2) until the budget is spent; then the jobs in
# flight are killed. Finished jobs are records (architecture-major, so they come in seed pairs), returned
# in one archive with the rewritten JSONs; a later call resumes from the committed records.
# GT_ARGS: extra driver arguments, e.g. a smoke test on a CPU:
#   GT_ARGS="--accelerator cpu --workers 1 --recipe.train_images 256 --recipe.epochs 1" OUT=/tmp/o bash bench/...
set -uo pipefail
budget=${1:-480}
shift || true
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(studies/layerwise_groundtruth/groundtruth_mobilenetv2_long.yaml
                                     studies/layerwise_groundtruth/groundtruth_shufflenetv2_long.yaml)
out=${OUT:-/tmp/out}
mkdir -p "$out"
deadline=$((SECONDS + budget))
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheels missing: run 'make device-carry' here and carry .whl"; exit 2; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=offline
mkdir -p data/FashionMNIST/raw
for f in .fmnist/*.gz; do gunzip -c "$f" > "data/FashionMNIST/raw/$(basename "$f" .gz)" || exit 2; done
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"
for config in "${configs[@]}"; do
  [ "$SECONDS" -lt "$deadline" ] || break
  log="$out/$(basename "$config" .yaml).log"
  echo "=== $config (budget left $((deadline - SECONDS)) s)"
  setsid python3 -m dfnas_pl groundtruth --config "$config" ${GT_ARGS:-} > "$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 5; done
  kill -9 -- -"$pid" 2>/dev/null  # the driver and its workers (a job in flight is lost, a finished one kept)
  wait "$pid" 2>/dev/null
  tail -n 40 "$log"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  python3 -m dfnas_pl groundtruth --config "$config" ${GT_ARGS:-} --limit 0 2>&1 | tail -n 2  # JSON from the records
done
tar czf "$out/groundtruth_long.tgz" --exclude='*.lock*' studies/layerwise_groundtruth/*_long*
