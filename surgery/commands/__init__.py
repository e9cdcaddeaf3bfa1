"""The CLI's commands, one module each over the shared option groups (options.py) and the one
way a command runs (runner.py: sandbox, progress, errors -> exit codes); cli.py registers them."""
