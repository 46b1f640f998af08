"""jukilib: the hand-written code shared by every juki service.

Configuration, errors, gRPC bootstrap, database access, telemetry and the register engine live here;
the generated contracts live in the separate `juki` package.
"""
