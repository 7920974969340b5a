"""One secret scrubber (conventions.scrub) for the app, the local functions host and the Batch emulator:
each kind of secret is removed by all three, the text around it is kept, and scrubbing twice changes nothing."""
from __future__ import annotations

import pytest

from batchemu.util import strip_sas
from conventions.scrub import PATTERN, scrub, scrub_bytes
from devhost.logs import redact
from shared import storage

KEY = "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFy+/=="
JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL3N0b3JhZ2UifQ.c2lnbmF0dXJl-_x"

# (kind, text with a secret, the secret, what must stay)
SECRETS = [
    ("SAS signature in a URL", "GET https://a.blob.core.windows.net/c/b.txt?sv=2024-08-04&sr=b&sp=r&sig=Ab%2Bc%2Fd%3D&se=x",
     "Ab%2Bc%2Fd%3D", "https://a.blob.core.windows.net/c/b.txt"),
    ("URL-encoded SAS signature", "source=https%3A%2F%2Fa%2Fc%3Fsv%3D1%26sig%3DAbCdEf0123 failed", "AbCdEf0123", "failed"),
    ("account key in a connection string",
     f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net",
     KEY, "EndpointSuffix=core.windows.net"),
    ("SAS in a connection string", "BlobEndpoint=https://a;SharedAccessSignature=sv=2024&ss=b&sig=SIGSIGSIG;",
     "SIGSIGSIG", "BlobEndpoint=https://a"),
    ("SharedKey authorization header", f"Authorization: SharedKey devbatch:{KEY}", KEY, "SharedKey devbatch:"),
    ("SharedKey header in a dict repr", f"{{'Authorization': 'SharedKeyLite acct:{KEY}'}}", KEY, "acct:"),
    ("bearer token in an Authorization header", f"Authorization: Bearer {JWT}", JWT, "Authorization: Bearer "),
    ("short bearer token in a header", "'Authorization': 'Bearer abc123'", "abc123", "Authorization"),
    ("bare bearer token", f"token refused: Bearer {JWT} (expired)", JWT, "(expired)"),
    ("account key in JSON", f'{{"accountKey": "{KEY}", "name": "m"}}', KEY, '"name": "m"'),
    ("password with a space in JSON", '{"password": "correct horse", "user": "u"}', "correct horse", '"user": "u"'),
    ("client secret as a keyword", "ClientSecretCredential(client_secret='s3cr3t-value', tenant_id='t')",
     "s3cr3t-value", "tenant_id='t'"),
    ("password in an environment dump", "REGISTRY_PASSWORD=hunter2hunter2 PATH=/bin", "hunter2hunter2", "PATH=/bin"),
    ("request signature Storage quotes back",
     f"The MAC signature found in the HTTP request '{KEY}' is not the same as any computed signature.",
     KEY, "is not the same"),
]


@pytest.mark.parametrize("kind, text, secret, kept", SECRETS, ids=[s[0] for s in SECRETS])
def test_each_kind_of_secret_is_removed_and_the_rest_kept(kind, text, secret, kept):
    out = scrub(text)
    assert secret not in out and "<redacted>" in out and kept in out
    assert scrub(out) == out  # idempotent
    assert scrub_bytes(text.encode()) == out.encode()


@pytest.mark.parametrize("kind, text, secret, kept", SECRETS, ids=[s[0] for s in SECRETS])
def test_app_host_and_emulator_remove_the_same_secrets(kind, text, secret, kept):
    assert storage.scrub(text) == scrub(text)
    assert redact(text) == scrub(text, marker="[REDACTED]")
    assert secret not in strip_sas(text)


@pytest.mark.parametrize("text", [
    "Bearer (Microsoft Entra ID) tokens are not supported by the emulator; use SharedKey",
    "Bearer tokens are not supported",
    "unknown field 'password'; did you mean 'pass'?",
    "PWD=/mnt/batch/tasks/workitems/job/task config=x.json signature verified",
    "sig=<redacted> and AccountKey=<redacted>",
])
def test_text_without_secrets_is_left_as_it_is(text):
    assert scrub(text) == text


def test_the_pattern_names_what_it_keeps_in_group_one():
    m = PATTERN.search("x AccountKey=abc;y")
    assert m is not None and m.group(1) == "AccountKey=" and m.group(0) == "AccountKey=abc"


def test_the_emulator_reports_urls_without_their_query():
    assert strip_sas("https://a.blob.core.windows.net/c/b?sv=1&sig=X") == "https://a.blob.core.windows.net/c/b"
    assert strip_sas("HTTP Error 403 for https://a/b?sv=1&sig=X with AccountKey=K2V5") == \
        "HTTP Error 403 for https://a/b with AccountKey=<redacted>"
