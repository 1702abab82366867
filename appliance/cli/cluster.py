"""A Dask cluster that trusts only its own: ``appliance cluster init``, ``cluster cert`` and ``appliance scheduler``.

Without TLS, anything that reaches the scheduler's port is a Dask client: ``client.run`` executes code on every
worker (as the worker's user, root for a worker without a launcher) and a rogue ``dask worker`` joins, declares
65 CPUs and is handed other users' scenes. So the cluster runs mutual TLS: ``cluster init DIR`` makes a private
CA and one key pair per name (the scheduler, the appliance, each worker); every connection presents a certificate
signed by that CA and checks the other side's (distributed's ``Security``, ``require_encryption``). Anyone
without a key pair of this CA can neither connect as a client nor join as a worker. ``appliance scheduler``
listens on loopback unless told otherwise, with TLS from DIR when it is given.

Copy to each machine only what it needs: ``ca.pem`` (public) and its own ``NAME.pem`` + ``NAME.key``. ``ca.key``
stays where ``cluster cert`` is run.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

CA, CA_KEY = "ca.pem", "ca.key"
DEFAULT_NAMES = ("scheduler", "appliance", "worker")
VALID_DAYS = 3650


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser("cluster", help="TLS for a Dask cluster: a private CA and key pairs").add_subparsers(
        dest="sub", required=True)
    p = c.add_parser("init", help="make DIR/ca.pem (+ ca.key) and a key pair per --name (default: scheduler, "
                     "appliance, worker)")
    p.add_argument("dir", help="a new or empty folder (keys are written 0600)")
    p.add_argument("--name", action="append", help="a key pair to make, e.g. render1 (repeat the flag)")
    p.set_defaults(func=cmd_init)
    p = c.add_parser("cert", help="one more key pair signed by DIR's CA (a new worker machine)")
    p.add_argument("dir", help="the folder cluster init made")
    p.add_argument("name", help="the key pair's name: NAME.pem and NAME.key")
    p.set_defaults(func=cmd_cert)
    p = sub.add_parser("scheduler", help="run the Dask scheduler: loopback unless --host, TLS with --tls-dir")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1; give the "
                   "LAN address for workers on other machines, with --tls-dir)")
    p.add_argument("--port", type=int, default=8786, help="the port to listen on (default 8786)")
    p.add_argument("--tls-dir", help="the folder of cluster init: ca.pem, scheduler.pem, scheduler.key")
    p.set_defaults(func=cmd_scheduler)


def tls_files(folder: str | Path, name: str) -> tuple[str, str, str]:
    """(CA, certificate, key) of one name, checked to exist: a missing file is named, not a TLS error later."""
    root = Path(folder)
    files = (root / CA, root / f"{name}.pem", root / f"{name}.key")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"appliance: TLS file(s) missing: {', '.join(missing)} (make them with `appliance "
                         f"cluster init {root}` or `appliance cluster cert {root} {name}`)")
    return str(files[0]), str(files[1]), str(files[2])


def security(folder: str | Path, name: str):  # -> distributed.Security
    """Mutual TLS as ``name``: its key pair, the CA to check the other side, encryption required."""
    from distributed.security import Security

    ca, cert, key = tls_files(folder, name)
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, tls_scheduler_cert=cert,
                    tls_scheduler_key=key, tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)


def cmd_init(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if (root / CA).exists():
        raise SystemExit(f"appliance cluster init: {root / CA} exists; add key pairs with `appliance cluster cert`")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    ca_key = _new_key()
    _write_key(root / CA_KEY, ca_key)
    ca = _certificate("appliance cluster CA", ca_key.public_key(), ca_key, None, is_ca=True)
    _write(root / CA, _pem(ca), 0o644)
    for name in args.name or DEFAULT_NAMES:
        _issue(root, name, ca, ca_key)
    print(f"CA and key pairs in {root}: copy ca.pem and NAME.pem + NAME.key to each machine; keep ca.key here")
    return 0


def cmd_cert(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    root = Path(args.dir)
    if not (root / CA_KEY).is_file():
        raise SystemExit(f"appliance cluster cert: no {root / CA_KEY} (run `appliance cluster init {root}` first)")
    ca = x509.load_pem_x509_certificate((root / CA).read_bytes())
    ca_key = serialization.load_pem_private_key((root / CA_KEY).read_bytes(), password=None)
    _issue(root, args.name, ca, ca_key)
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", args.host, "--port", str(args.port),
            "--no-dashboard"]
    if args.tls_dir:
        ca, cert, key = tls_files(args.tls_dir, "scheduler")
        argv += ["--protocol", "tls", "--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key]
    elif not ipaddress.ip_address(_literal(args.host)).is_loopback:
        print("appliance scheduler: WARNING: listening beyond loopback without TLS: anyone who reaches "
              f"{args.host}:{args.port} can run code on every worker (use --tls-dir)", file=sys.stderr, flush=True)
    env = dict(os.environ)
    if args.tls_dir:  # the scheduler refuses plain connections too
        env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
    print(f"appliance scheduler: {' '.join(argv[1:])}", flush=True)
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def _literal(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        return "127.0.0.1" if host == "localhost" else "0.0.0.0"


# ---- keys and certificates (cryptography) ----------------------------------------------------------------------
def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _certificate(name: str, public_key, signer, issuer, *, is_ca: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.subject if issuer is not None else subject)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if not is_ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _issue(root: Path, name: str, ca, ca_key) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith(".") or name == "ca":
        raise SystemExit(f"appliance cluster: bad name {name!r} (letters, digits, - _ .)")
    if (root / f"{name}.pem").exists():
        raise SystemExit(f"appliance cluster: {root / name}.pem exists")
    key = _new_key()
    _write_key(root / f"{name}.key", key)
    _write(root / f"{name}.pem", _pem(_certificate(name, key.public_key(), ca_key, ca)), 0o644)
    print(f"  {name}: {root / name}.pem, {root / name}.key")


def _pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _write_key(path: Path, key) -> None:
    from cryptography.hazmat.primitives import serialization

    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), 0o600)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
