"""One blueprint per trigger: parse the trigger's input, call shared/, nothing else."""
