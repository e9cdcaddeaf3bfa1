"""CLI commands kept out of cli.py (one module per command); cli.py registers them on its group."""


def register(main, handle_errors, emit_json) -> None:
    from surgery.commands import diff

    diff.register(main, handle_errors, emit_json)
