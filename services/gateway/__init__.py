"""gateway: the only door into juki — caller identity, purpose of use, minimisation, operation log."""
