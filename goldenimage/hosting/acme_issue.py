"""Certificates for environments over ACME HTTP-01, with the `acme` library (Certbot's): Let's Encrypt in
production, Pebble in tests.

golden is the ACME client: it orders a certificate for an environment's domains, publishes every challenge
answer on every web node (challenge.py) before it asks the CA to validate, and hands the certificate and its
key to the web nodes. An environment whose certificate is due (a third of its lifetime left, Let's Encrypt's
advice) is renewed on each `golden env apply`; the orders of one run stay within the CA's published rate limit
(Let's Encrypt's by default; the rest wait for the next run), and one environment's failure (a domain that does
not resolve to the web nodes, a CA error) is reported with its reason and never stops the others."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .challenge import ChallengeStore

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
#: Let's Encrypt's limit on new orders per account (300 every 3 hours): one run never asks for more.
DEFAULT_ORDERS_PER_RUN = 300
#: Orders in flight at once (the CA validates each challenge with several requests).
DEFAULT_WORKERS = 4
USER_AGENT = "goldenimage-env"


def new_account_key() -> str:
    """A new ACME account key (RSA 2048, what every CA accepts), as PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def new_certificate_key() -> bytes:
    """A certificate's key: ECDSA P-256 (small, fast, accepted by every current client)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def not_after(fullchain_pem: str) -> datetime:
    return x509.load_pem_x509_certificate(fullchain_pem.encode()).not_valid_after_utc


def needs_renewal(fullchain_pem: str | None, domains: Sequence[str], now: datetime | None = None) -> bool:
    """True when there is no certificate, it names other domains, or a third of its lifetime or less is left."""
    if not fullchain_pem:
        return True
    try:
        cert = x509.load_pem_x509_certificate(fullchain_pem.encode())
    except ValueError:
        return True
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    names = set(san.get_values_for_type(x509.DNSName))
    if names != set(domains):
        return True
    now = now or datetime.now(UTC)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - now < lifetime / 3


@dataclass(frozen=True)
class Issued:
    name: str
    fullchain_pem: str
    key_pem: str


@dataclass
class IssueReport:
    issued: list[Issued] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)


class Issuer:
    """Orders certificates from one ACME directory with one account; thread-safe (a client per thread)."""

    def __init__(self, directory_url: str, account_key_pem: str, store: ChallengeStore, *,
                 ca_bundle: str | None = None, timeout: float = 90.0) -> None:
        self.directory_url = directory_url
        self.key = jose.JWKRSA(key=serialization.load_pem_private_key(account_key_pem.encode(), password=None))
        self.store = store
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        self._local = threading.local()
        self._account: messages.RegistrationResource | None = None
        self._account_lock = threading.Lock()

    def _client(self) -> client.ClientV2:
        acme = getattr(self._local, "client", None)
        if acme is not None:
            return acme
        # requests takes a CA bundle path where `verify` is; the library's annotation says bool only.
        verify: bool = self.ca_bundle if self.ca_bundle else True  # type: ignore[assignment]
        net = client.ClientNetwork(self.key, verify_ssl=verify, user_agent=USER_AGENT, timeout=30)
        directory = client.ClientV2.get_directory(self.directory_url, net)
        acme = client.ClientV2(directory, net)
        with self._account_lock:
            if self._account is None:
                try:
                    self._account = acme.new_account(messages.NewRegistration.from_data(
                        terms_of_service_agreed=True))
                except errors.ConflictError as exc:  # this key's account exists: use it
                    self._account = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
        net.account = self._account
        self._local.client = acme
        return acme

    def issue(self, name: str, domains: Sequence[str]) -> Issued:
        """A certificate for `domains`: every challenge answer published on every web node first, removed after."""
        acme = self._client()
        key_pem = new_certificate_key()
        order = acme.new_order(crypto_util.make_csr(key_pem, list(domains)))
        answers = []
        tokens = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                chall = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
                if chall is None:
                    raise errors.Error(f"{authz.body.identifier.value}: the CA offers no HTTP-01 challenge")
                response, validation = chall.response_and_validation(self.key)
                token = chall.chall.encode("token")
                self.store.put(token, validation)
                tokens.append(token)
                answers.append((chall, response))
            for chall, response in answers:
                acme.answer_challenge(chall, response)
            deadline = datetime.now() + timedelta(seconds=self.timeout)
            order = acme.poll_and_finalize(order, deadline=deadline)
        finally:
            for token in tokens:
                self.store.remove(token)
        assert order.fullchain_pem is not None
        return Issued(name, order.fullchain_pem, key_pem.decode())

    def issue_many(self, wanted: Sequence[tuple[str, Sequence[str]]], *, workers: int = DEFAULT_WORKERS,
                   orders_per_run: int = DEFAULT_ORDERS_PER_RUN,
                   on_done: Callable[[str, str | None], None] | None = None) -> IssueReport:
        """Issue for each (name, domains) in parallel, at most `orders_per_run` orders (the rest are deferred
        to the next run); a failure is recorded with its reason and the others go on."""
        report = IssueReport(deferred=[name for name, _ in wanted[orders_per_run:]])
        lock = threading.Lock()

        def one(item: tuple[str, Sequence[str]]) -> None:
            name, domains = item
            try:
                issued = self.issue(name, domains)
            except Exception as exc:  # noqa: BLE001 -- any CA or network error is this environment's alone
                reason = " ".join(str(exc).split())[:300] or type(exc).__name__
                with lock:
                    report.failed[name] = reason
                if on_done:
                    on_done(name, reason)
                return
            with lock:
                report.issued.append(issued)
            if on_done:
                on_done(name, None)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(one, wanted[:orders_per_run]))
        report.issued.sort(key=lambda i: i.name)
        return report
