#!/usr/bin/env bash
# The GPU check, about 10 minutes on one GPU: crossq_trl compiled with CUDA graphs against sb3-contrib (PyTorch, same
# GPU) and SBX (JAX: on the GPU when its CUDA build is installed, else skipped) on the update and end-to-end
# throughput benchmarks, then a short HalfCheetah-v5 learning run. Everything goes to benchmarks/results/gpu/.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, with `pip install -e ".[bench]"` done
set -uo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results/gpu
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  python -c "import jax; print('jax devices', jax.devices())" 2>&1 | tail -1
} > "$out/machine.txt" 2>&1

# 1. Updates/s (~4 min): critic [1024, 1024] and [256, 256], compiled + CUDA graphs, eager, sb3-contrib, SBX.
timeout 300 python benchmarks/update_throughput.py --device cuda --peers --critics 1024 256 --rounds 3 --seconds 3 \
  --out "$out" --name update_throughput 2>&1 | tee "$out/update_throughput.log"

# 2. End-to-end env steps/s (~3 min): HalfCheetah-v5, critic [256, 256], random and learning phases.
timeout 240 python benchmarks/training_throughput.py --device cuda --critics 256 --total-steps 6000 \
  --learning-starts 2000 --out "$out" --name training_throughput 2>&1 | tee "$out/training_throughput.log"

# 3. A short learning run (~3 min): HalfCheetah-v5, default networks, 15k steps, final deterministic evaluation.
timeout 240 crossq-trl train HalfCheetah-v5 --device cuda --total-timesteps 15000 --learning-starts 5000 --seed 0 \
  --log-dir "$out/halfcheetah" --logger csv 2>&1 | tail -n 40 | tee "$out/halfcheetah.log"
