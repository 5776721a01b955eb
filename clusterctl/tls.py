"""A cluster's own certificate authority, and a certificate for each role, made with ``cryptography``.

Dask's TLS is mutual: every connection presents a certificate, and every side requires one signed
by the CA it was given (hostnames are not checked). So one certificate per role suffices:
``scheduler`` goes to the scheduler host, ``worker`` to the worker hosts, ``client`` stays here.
A new CA (``rotate``) makes every certificate of the old one useless.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

ROLES = ("scheduler", "worker", "client")
VALID_DAYS = 825


@dataclass(frozen=True)
class Credentials:
    ca: Path
    cert: Path
    key: Path

    def security(self):
        """A ``distributed.security.Security`` that presents these credentials and requires TLS."""
        from distributed.security import Security

        return Security(tls_ca_file=str(self.ca), tls_client_cert=str(self.cert),
                        tls_client_key=str(self.key), require_encryption=True)


def client_credentials(current) -> Credentials | None:
    """The client's certificate files of a recorded cluster (``state.ClusterState``), or None when it
    runs plain TCP. Certificates clusterctl made are found in the cluster's folder under this
    machine's ``$CLUSTERCTL_HOME``, so that a copied folder works; an operator's where the state says."""
    from clusterctl import state as states

    if not current.tls:
        return None
    if current.tls.get("mode") == "auto":
        return credentials(states.cluster_dir(current.cluster), "client")
    return Credentials(Path(current.tls["ca"]), Path(current.tls["cert"]), Path(current.tls["key"]))


def folder(cluster_dir: Path) -> Path:
    return cluster_dir / "tls"


def credentials(cluster_dir: Path, role: str) -> Credentials:
    d = folder(cluster_dir)
    return Credentials(ca=d / "ca.pem", cert=d / f"{role}.pem", key=d / f"{role}-key.pem")


def exists(cluster_dir: Path) -> bool:
    return all(p.exists() for role in ROLES for p in vars(credentials(cluster_dir, role)).values())


def ensure(cluster_dir: Path, cluster: str, *, rotate: bool = False) -> bool:
    """Make the CA and the role certificates unless they exist; True when new ones were made."""
    if exists(cluster_dir) and not rotate:
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"clusterctl CA {cluster} {now:%Y%m%d%H%M%S}")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    d = folder(cluster_dir)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    staged: dict[Path, bytes] = {d / "ca.pem": _pem_cert(ca_cert)}
    # The client's certificate can only connect: TLS refuses it to anything that serves (a scheduler or
    # a worker that presented it would fail every handshake). Schedulers and workers both serve and
    # connect (a worker dials the scheduler and its peers), so theirs can do both.
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = {"scheduler": both, "worker": both, "client": [ExtendedKeyUsageOID.CLIENT_AUTH]}
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster}-{role}")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage(usage[role]), critical=True)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"dask-{role}")]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        creds = credentials(cluster_dir, role)
        staged[creds.cert] = _pem_cert(cert)
        staged[creds.key] = _pem_key(key)
    for path, data in staged.items():  # write all, then swap in: never half of a rotation
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    for path in staged:
        os.replace(path.with_suffix(".tmp"), path)
    return True


def fingerprint(*files: Path | str) -> str:
    """Identifies the certificates in force; the state records it, so that processes started
    under other certificates (a rotation, new operator files) are restarted."""
    import hashlib

    digest = hashlib.sha256()
    for f in files:
        digest.update(Path(f).read_bytes())
    return digest.hexdigest()[:16]


def for_inventory(config, cluster_dir: Path, cluster: str, rotate: bool = False):
    """(files per role for ``spec.build``, client credentials as a dict for the state) or (None, None)
    when TLS is off. ``config`` is the inventory's ``TlsConfig``."""
    if config.mode == "off":
        return None, None
    if config.mode == "files":
        roles = {role: (config.ca_file, config.cert, config.key) for role in ROLES}
    else:
        ensure(cluster_dir, cluster, rotate=rotate)
        roles = {role: (str(c.ca), str(c.cert), str(c.key))
                 for role, c in ((role, credentials(cluster_dir, role)) for role in ROLES)}
    ca, cert, key = roles["client"]
    return roles, {"mode": config.mode, "ca": ca, "cert": cert, "key": key,
                   "fingerprint": fingerprint(*roles["scheduler"], *roles["worker"])}


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
