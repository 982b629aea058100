"""The launcher: run any function on N processes through accelerate's notebook_launcher and bring rank 0's result
back (launch), name the process that failed (failures), draw one bar over them all (bar). It knows nothing of
inference: the engine above it launches its runs through it."""
