"""Reading ``s3://`` storage URLs with the environment into an `S3Location`. Kept apart from
the store (chatmedia.storage.s3) so that checking the setting does not import obstore."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from chatmedia.units import parse_bool


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where the bucket is and how to sign in: an ``s3://`` URL read with the environment."""

    bucket: str
    prefix: str  # "" or segments joined by "/", without leading or trailing "/"
    endpoint: str | None  # None: AWS's endpoint for the region
    region: str
    path_style: bool
    # None: obstore's own credential chain (web identity, container, instance metadata).
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rules
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,100}")
_REGION = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PARAMETER_NAME = re.compile(r"[A-Za-z_]{1,40}")
_PARAMETERS = frozenset(
    {"endpoint", "region", "path_style", "access_key_id", "secret_access_key", "session_token"}
)


def parse_s3_url(url: str, environ: Mapping[str, str]) -> S3Location:
    """Read ``s3://BUCKET[/PREFIX][?endpoint=…&region=…&path_style=…]`` and the environment.

    Query parameters win over the environment: `endpoint` (else AWS_ENDPOINT_URL_S3 or
    AWS_ENDPOINT_URL; else AWS), `region` (else AWS_REGION or AWS_DEFAULT_REGION; else
    us-east-1), `path_style` (true/false; default true when an endpoint is given),
    `access_key_id` with `secret_access_key` and optionally `session_token` (else
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; else obstore's chain).
    Values are percent-decoded, and ``+`` stays a plus, as secret keys often contain one.
    A ValueError names the part that is wrong and never quotes a credential.
    """
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("the S3 URL contains spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise ValueError("not an s3://BUCKET/PREFIX URL")
    if "@" in parts.netloc:
        raise ValueError(
            "credentials go in the access_key_id and secret_access_key parameters or the "
            "AWS_* variables, not before the bucket name"
        )
    if parts.fragment or url.endswith("#"):
        raise ValueError("an S3 URL has no #fragment (percent-encode '#' in values as %23)")
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"bucket {bucket!r} is not a bucket name (3 to 63 lowercase letters, digits, "
            "dots and hyphens)"
        )
    prefix = parts.path.strip("/")
    if prefix and not all(
        _SEGMENT.fullmatch(s) and s not in (".", "..") for s in prefix.split("/")
    ):
        raise ValueError(
            f"prefix {prefix!r} is not a path of segments made of letters, digits, '.', '_' and '-'"
        )
    params = _query(parts.query)
    endpoint = params.get("endpoint") or _env(environ, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if endpoint is not None:
        endpoint = _endpoint(endpoint)
    region = params.get("region") or _env(environ, "AWS_REGION", "AWS_DEFAULT_REGION")
    region = region or "us-east-1"
    if not _REGION.fullmatch(region):
        raise ValueError(f"region {region!r} is not a region name")
    path_style = endpoint is not None
    if "path_style" in params:
        try:
            path_style = parse_bool(params["path_style"])
        except ValueError:
            raise ValueError(f"path_style {params['path_style']!r} is not true or false") from None
    key_id, secret, token = _credentials(params, environ)
    return S3Location(bucket, prefix, endpoint, region, path_style, key_id, secret, token)


def _query(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in query.split("&") if query else ():
        name, _, value = item.partition("=")
        name = unquote(name)
        if name not in _PARAMETERS:
            shown = repr(name) if _PARAMETER_NAME.fullmatch(name) else "a parameter"
            raise ValueError(
                f"the S3 URL has {shown} it does not know; it takes "
                + ", ".join(sorted(_PARAMETERS))
            )
        if name in params:
            raise ValueError(f"the S3 URL gives {name} twice")
        if not value:
            raise ValueError(f"the S3 URL's {name} is empty")
        try:
            params[name] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise ValueError(f"the S3 URL's {name} is not UTF-8 once percent-decoded") from None
    return params


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    return next((environ[n] for n in names if environ.get(n)), None)


def _endpoint(text: str) -> str:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("endpoint is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("endpoint must be an http:// or https:// URL with a host")
    if "@" in parts.netloc:
        raise ValueError("endpoint must not carry credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError("endpoint must be scheme://host[:port], without a path")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _credentials(
    params: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[str | None, str | None, str | None]:
    """Static credentials from the URL, else from the environment, else none."""
    if {"access_key_id", "secret_access_key", "session_token"} & params.keys():
        if "access_key_id" not in params or "secret_access_key" not in params:
            raise ValueError("the S3 URL needs access_key_id and secret_access_key together")
        return params["access_key_id"], params["secret_access_key"], params.get("session_token")
    key_id, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if bool(key_id) != bool(secret):
        missing = "AWS_SECRET_ACCESS_KEY" if key_id else "AWS_ACCESS_KEY_ID"
        raise ValueError(f"{missing} is missing (AWS credentials are a pair)")
    if not key_id:
        return None, None, None
    return key_id, secret, environ.get("AWS_SESSION_TOKEN") or None
