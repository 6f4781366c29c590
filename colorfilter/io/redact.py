"""Strip secrets from any text before it reaches a message, a log line or a written record.

Three layers, because a secret can arrive by several routes: credentials embedded in a URL
(`s3://KEY:SECRET@bucket`), signed query parameters (presigned S3/GCS URLs, `?token=`), and the
literal values of the standard secret environment variables (a backend may echo one back in an
exception). `redact` is cheap and idempotent: call it on every string that leaves the process.
"""

from __future__ import annotations

import os
import re
from typing import Any

MASK = "REDACTED"

# Environment variables whose values are secrets (their literal values are masked anywhere).
SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_HUB_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
)
_MIN_LITERAL = 8  # shorter values ("test") would mask ordinary words

# user[:password]@ right after the scheme; a password may hold '/' (AWS secret keys do)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(?:[^/\s@'\"]*:[^\s@'\"]*|[^/\s@'\"]+)@")
_SIGNED_PARAM = re.compile(
    r"(?i)([?&;](?:x-amz-[a-z0-9-]+|x-goog-[a-z0-9-]+|signature|sig|token|access_token|"
    r"id_token|api_key|apikey|key|awsaccesskeyid|policy|credential|password|secret|sv|se|sp|"
    r"sr|skoid|sktid)=)[^&\s#'\"]*"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{16,}\b")
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


def redact(text: Any) -> str:
    """`text` as a string with credentials, signatures and secret env values masked."""
    out = _redact_patterns(str(text))
    for value in _secret_values():
        out = out.replace(value, MASK)
    return out


def _redact_patterns(out: str) -> str:
    out = _USERINFO.sub(rf"\1{MASK}@", out)
    out = _SIGNED_PARAM.sub(rf"\1{MASK}", out)
    out = _BEARER.sub(rf"\1{MASK}", out)
    out = _HF_TOKEN.sub(MASK, out)
    return _AWS_KEY_ID.sub(MASK, out)


def redact_obj(value: Any) -> Any:
    """A JSON-like value with every string (keys too) passed through `redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k): redact_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_obj(v) for v in value]
    return value


def has_credentials(url: str) -> bool:
    """True when `url` embeds a user/password or a signed query: such URLs must not be stored."""
    return _redact_patterns(url) != url


def _secret_values() -> list[str]:
    values = {os.environ.get(name, "") for name in SECRET_ENV_VARS}
    # longest first, so a value containing another is masked whole
    return sorted((v for v in values if len(v) >= _MIN_LITERAL), key=len, reverse=True)
