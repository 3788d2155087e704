#!/usr/bin/env bash
# The long-recipe MobileNetV2 ground truth on the lent GPU machine (issue 13: does 46x the training lift
# the noise ceiling?). Prepared here, run there in ONE call of the device tool:
#   make device-carry          # here: the wheels the GPU image lacks (.whl/) and the dataset files (.fmnist/)
#   device run: command "bash bench/device_groundtruth.sh 480", carry [".whl", ".fmnist"], timeout_s 570
# then here: unpack the records it returns and rewrite the JSON from them (nothing is trained again):
#   tar xzf <files_at>/groundtruth_long.tgz
#   python -m dfnas_pl groundtruth --config experiments/fmnist/groundtruth_mobilenetv2_long.yaml --limit 0
# It trains until the budget (seconds, first argument) is spent, then kills the jobs in flight: the
# finished ones are records (architecture-major, so they come in seed pairs) and a later call resumes.
set -uo pipefail
budget=${1:-480}
out=${OUT:-/tmp/out}
mkdir -p "$out"
config=experiments/fmnist/groundtruth_mobilenetv2_long.yaml
work=benchmarks/groundtruth/mobilenetv2_long_jobs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheels missing: run 'make device-carry' here and carry .whl"; exit 2; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=offline
mkdir -p data/FashionMNIST/raw
for f in .fmnist/*.gz; do gunzip -c "$f" > "data/FashionMNIST/raw/$(basename "$f" .gz)" || exit 2; done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"
# GT_ARGS: extra driver arguments (a smoke test here: GT_ARGS="--accelerator cpu --workers 1 --work_dir ...")
setsid python3 -m dfnas_pl groundtruth --config "$config" ${GT_ARGS:-} > "$out/groundtruth.log" 2>&1 &
pid=$!
deadline=$((SECONDS + budget))
while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 5; done
kill -9 -- -"$pid" 2>/dev/null  # the driver and its workers (a job in flight is lost, a finished one is kept)
wait "$pid" 2>/dev/null
tail -n 80 "$out/groundtruth.log"
python3 -m dfnas_pl groundtruth --config "$config" ${GT_ARGS:-} --limit 0 2>&1 | tail -n 3  # the JSON from the records
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
tar czf "$out/groundtruth_long.tgz" "$work" benchmarks/groundtruth/mobilenetv2_long.json \
  $(ls benchmarks/groundtruth/mobilenetv2_long.png 2>/dev/null)
ls "$work/records" | grep -c '_seed[0-9]*.json$'
