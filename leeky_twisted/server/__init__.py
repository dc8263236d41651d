"""The node runtime: the Ready loop (node.py), the service tree (service.py), the
twistd options (tap.py), metrics and log observers."""
