"""When the lean S3 client (:mod:`tychoreg.store.s3http`) may answer, and where it connects.

Kept apart from the client, and light (no ``http.client``, no ``ssl``), so the CLI can learn the
server's address right after reading the configuration and connect to it while the rest of
tychoreg is still importing (:mod:`tychoreg.store.preconnect`). The client itself is built from
the same answer, so the two never disagree about which server that is.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Client options the lean client honours exactly; anything else (botocore ``config`` included:
#: only boto3 can say whether it is valid) means boto3 must do the work.
PLAIN_OPTIONS = {
    "bucket",
    "prefix",
    "endpoint_url",
    "region_name",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
}
#: Environment that changes what boto3 would do in ways the lean client does not reproduce.
BOTO_ENV = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "TYCHOREG_NO_FAST_PATH",
)


@dataclass(frozen=True)
class LeanTarget:
    """Everything the lean client needs to sign and send requests to one bucket."""

    bucket: str
    endpoint: str
    region: str
    key_id: str
    secret: str
    token: str | None
    #: Path-style addressing (``host/bucket/key``), as S3-compatible servers expect.
    path_style: bool
    ca_bundle: str | None

    @property
    def https(self) -> bool:
        return urllib.parse.urlsplit(self.endpoint).scheme == "https"

    @property
    def host(self) -> str:
        """The ``Host`` the requests go to (with a port when the endpoint names one)."""
        netloc = urllib.parse.urlsplit(self.endpoint).netloc
        return netloc if self.path_style else f"{self.bucket}.{netloc}"

    @property
    def address(self) -> tuple[str, int]:
        parts = urllib.parse.urlsplit(f"//{self.host}")
        return parts.hostname or "", parts.port or (443 if self.https else 80)


def lean_target(options: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> LeanTarget | None:
    """Where the lean client would send requests for ``options`` (the config's s3 section); None
    when the options are not plain enough, and boto3 must answer everything."""
    if set(options) - PLAIN_OPTIONS or any(env.get(name) for name in BOTO_ENV):
        return None
    key_id, secret = options.get("aws_access_key_id"), options.get("aws_secret_access_key")
    token = options.get("aws_session_token")
    if key_id is None and secret is None and token is None:  # boto3 would look in the environment first
        key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        token = env.get("AWS_SESSION_TOKEN")
    if not (isinstance(key_id, str) and isinstance(secret, str) and key_id and secret):
        return None
    region = options.get("region_name") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    endpoint = options.get("endpoint_url")
    bucket = options["bucket"]
    if endpoint:  # path-style for a custom endpoint, as S3-compatible servers expect
        path_style = True
        region = region or "us-east-1"
    elif region and "." not in bucket:
        endpoint, path_style = f"https://s3.{region}.amazonaws.com", False
    else:
        return None
    if urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
        return None
    return LeanTarget(bucket, endpoint, region, key_id, secret, token, path_style, env.get("AWS_CA_BUNDLE") or None)
