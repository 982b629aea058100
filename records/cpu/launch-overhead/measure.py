"""Issue 21's cost: wall time of launch(hello, num_processes=2, cpu=True), before and after launch went through
accelerate.notebook_launcher, in one run, interleaved (the machine is shared: only a ratio within one run counts).

"Before" is mgpu_lab/engine/launch.py at commit 0998f4e (PrepareForLaunch + torch's start_processes), loaded beside
today's. Run from the top of a checkout: python records/cpu/launch-overhead/measure.py
"""

import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mgpu_lab.engine  # the package the old module's relative imports resolve against
from mgpu_lab.course.demos import hello
from mgpu_lab.engine import launch as after

BEFORE = "0998f4e"
source = subprocess.run(["git", "show", f"{BEFORE}:mgpu_lab/engine/launch.py"], capture_output=True, text=True,
                        check=True).stdout
path = Path(tempfile.mkdtemp()) / "launch_before.py"
path.write_text(source)
spec = importlib.util.spec_from_file_location("mgpu_lab.engine.launch_before", path)
before = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = before
spec.loader.exec_module(before)

times: dict[str, list[float]] = {"before": [], "after": []}
for _ in range(8):
    for name, module in (("before", before), ("after", after)):
        start = time.perf_counter()
        module.launch(hello, num_processes=2, cpu=True, verbose=False)
        times[name].append(time.perf_counter() - start)
old, new = statistics.median(times["before"]), statistics.median(times["after"])
print(f"median of 8: before {old:.3f} s, after {new:.3f} s, ratio {new / old:.2f}, difference {new - old:+.3f} s")
print({name: [round(t, 3) for t in values] for name, values in times.items()})
