#!/bin/bash
# One stage on several machines without a scheduler: run this on every node, NODE_RANK 0..NNODES-1,
# MASTER_ADDR = node 0's address (reachable from all nodes), the same PORT everywhere.
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash experiments/cluster/torchrun.sh fit --config experiments/fmnist/search_darts.yaml --config experiments/cluster/gpu.yaml
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash experiments/cluster/torchrun.sh fit --config ... (same arguments)
# Synthesis: add --config experiments/cluster/gpu_synthesis.yaml instead of gpu.yaml.
# On CPU-only machines (as tests/stages/test_cluster.py does on localhost with gloo):
#   GPUS=1 ... torchrun.sh fit --config experiments/fmnist/synthesize.yaml --trainer.strategy ddp_nosync
# Lightning reads the ranks torchrun sets (TorchElasticEnvironment); num_nodes and devices must match.
set -euo pipefail
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-29500}
GPUS=${GPUS:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
exec python -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS" \
  --master_addr "$MASTER_ADDR" --master_port "$PORT" \
  -m dfnas_pl "$@" --trainer.num_nodes "$NNODES" --trainer.devices "$GPUS"
