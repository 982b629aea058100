python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD
mkdir -p $OUT/lessons
timeout 130 python3 -c "
from pathlib import Path
from mgpu_lab.lessons import NOTEBOOKS, run_lesson
from mgpu_lab.gpu_check import notebook_errors
name = '03_batched_inference.ipynb'
s = run_lesson(NOTEBOOKS / name, Path('$OUT/lessons'), timeout=120, allow_errors=True)
errors = notebook_errors(Path('$OUT/lessons') / name)
print(f'{name}: {s:.0f} s, {len(errors)} cell(s) with an error', *errors, sep='\n  ')
" 2>&1 | tail -20 | tee $OUT/lessons/lesson3.txt
