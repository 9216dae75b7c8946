"""Generation: quota plans, deterministic seeds, acceptance in seed order."""
