set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/c && python3 -c "from mgpu_lab.prompts import default_prompts; open('/tmp/c/prompts.txt','w').write('\n'.join((default_prompts()*2)[:64])+'\n')"
start=$(date +%s)
timeout 170 python3 -m mgpu_lab bench --model shape:llama2-7b --num-processes 1 --modes batched,continuous --batch-sizes 16 --max-new-tokens 32 --prompts /tmp/c/prompts.txt --prompt-set article-64 --repeats 1 --out /tmp/c --json > /tmp/c/bench.txt 2>&1; echo "bench rc=$? in $(( $(date +%s) - start )) s"
tail -5 /tmp/c/bench.txt; cat /tmp/c/records.csv
tar czf $OUT/c.tgz -C /tmp c
timeout 150 python3 -m mgpu_lab gpu-check --step decode-probe --out /tmp/p > /tmp/probe.txt 2>&1; echo "probe rc=$? total $(( $(date +%s) - start )) s"
cp /tmp/probe.txt /tmp/p/ 2>/dev/null; tail -30 /tmp/probe.txt
tar czf $OUT/p.tgz -C /tmp p
