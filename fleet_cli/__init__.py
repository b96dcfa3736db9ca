"""The `fleet` command line: a face on top of every layer. Nothing imports it."""
