set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv
python3 -c "import torch, transformers, accelerate; print(torch.__version__, transformers.__version__, accelerate.__version__)"
start=$(date +%s)
timeout 440 python3 -m mgpu_lab gpu-check --out /tmp/g; echo "gpu-check rc=$? in $(( $(date +%s) - start )) s"
tar czf $OUT/g.tgz -C /tmp g
used=$(( $(date +%s) - start ))
if [ $used -lt 320 ]; then
  timeout 150 python3 -m mgpu_lab gpu-check --step decode-probe --out /tmp/p; echo "probe rc=$?"
  tar czf $OUT/p.tgz -C /tmp p
fi
