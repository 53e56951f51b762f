"""hyphal.identity: SPIFFE ids, keys, CSRs and certificate checks shared by both planes.

Modules: `spiffe` (SpiffeId), `keys` (generate_key, make_csr, key_to_pem), `certs`
(load_chain, spiffe_id_of, verify_chain, peer_identity, not_after), `client` (sidecar side of
the CA: request_certificate, CertBundle, CertificateRotator), `node` (NodePort: a `PORTS` entry
of a sidecar's xDS node metadata), `files` (write_private: atomic 0600 files for keys, certs,
tokens and state).
"""

from hyphal.identity.spiffe import SpiffeId

__all__ = ["SpiffeId"]
