"""TLS for peers and clients (tls.py) and the certificates it uses (certs.py)."""
