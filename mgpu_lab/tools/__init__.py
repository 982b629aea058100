"""The command line, the benchmark and its records, doctor, the lessons runner, gpu-check and its probes."""
