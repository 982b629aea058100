"""The engine: inference through the launcher: split prompts, generate, gather in order; load and check every input."""
