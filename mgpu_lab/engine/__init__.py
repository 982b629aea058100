"""The engine: launch N processes, split prompts, generate, gather in order; load and validate every input once."""
