"""The HTTP edge: one requests session per process, authenticated as configured."""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import requests

from cloudtrail_es.core.breaker import CircuitBreaker
from cloudtrail_es.core.config import Settings
from cloudtrail_es.core.errors import ClusterUnreachable, ConfigurationError
from cloudtrail_es.core.redact import redact
from cloudtrail_es.core.retry import Backoff, retrying, transient

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 120


class Cluster:
    """Sends requests to one cluster; knows nothing of CloudTrail."""

    def __init__(self, base_url: str, session: requests.Session,
                 verify: bool | str = True, breaker: CircuitBreaker | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        # Given with each request: requests lets REQUESTS_CA_BUNDLE override a session's.
        self._verify = verify
        #: Told of every request's outcome (the backfill's circuit breaker), when there is one.
        self.breaker = breaker

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """One request; a JSON ``body`` or raw ``data``. Raises only when nothing answered."""
        send_headers = {"Content-Type": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
        if headers:
            send_headers.update(headers)
        try:
            response = self._session.request(
                method, self.base_url + path, data=data, headers=send_headers,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), verify=self._verify,
            )
        except requests.RequestException as exc:
            error = ClusterUnreachable(redact(f"{method} {self.base_url}{path} failed: {exc}"))
            if self.breaker is not None:
                self.breaker.record(None, str(error))
            raise error from exc
        if self.breaker is not None:
            self.breaker.record(response.status_code, f"{method} {path}: HTTP {response.status_code}")
        return response


def create_cluster(settings: Settings) -> Cluster:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.auth = _auth(settings)
    if settings.auth == "apikey":
        session.headers["Authorization"] = f"ApiKey {settings.api_key}"
    if not settings.verify_certs:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return Cluster(settings.es_url, session,
                   verify=settings.verify_certs and (settings.ca_certs or True))


def _auth(settings: Settings) -> Any:
    if settings.auth == "basic":
        return (settings.username, settings.password)
    if settings.auth == "sigv4":
        return sigv4_auth(settings.es_url, settings.region or "", settings.sigv4_service)
    return None


def sigv4_auth(url: str, region: str, service: str = "es") -> Any:
    """SigV4 signing with botocore's credential chain (profiles, SSO, roles, tokens)."""
    from aws_requests_auth.boto_utils import BotoAWSRequestsAuth

    auth = BotoAWSRequestsAuth(aws_host=signed_host(url), aws_region=region, aws_service=service)
    if getattr(auth, "_refreshable_credentials", None) is None:
        raise ConfigurationError("ES_AUTH=sigv4 but botocore found no AWS credentials")
    return auth


def signed_host(url: str) -> str:
    """The Host header requests sends: the port only when it is not the scheme's default."""
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    host = parts.hostname or ""
    return host if parts.port in (None, default_port) else f"{host}:{parts.port}"


def request_retrying(cluster: Cluster, backoff: Backoff, deadline: float, method: str,
                     path: str, body: Any = None) -> requests.Response:
    """A request retried while nothing answers or the answer is retryable (``retry.transient``)."""
    response: requests.Response = retrying(
        lambda _: transient(lambda: cluster.request(method, path, body)),
        backoff, deadline, f"{method} {path}")
    return response


__all__ = ["Cluster", "ClusterUnreachable", "create_cluster", "request_retrying", "signed_host",
           "sigv4_auth"]
