"""juki's services: one package each, talking to each other only through `juki.*.v1` contracts."""
