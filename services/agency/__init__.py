"""agency: a STAND-IN for J-LIS's national servers, for development, tests and demos only."""
