"""SharedKey verification, mirroring the canonical string built by azure-batch's BatchSharedKeyAuthPolicy.

String to sign::

    VERB\n
    content-encoding\n content-language\n content-length\n content-md5\n content-type\n date\n
    if-modified-since\n if-match\n if-none-match\n if-unmodified-since\n range\n
    <name>:<value>\n          for every header whose name contains "ocp-", sorted, names lowercased
    /<account><raw path>
    \n<name>:<value>          for every query parameter (URL-decoded, first value, non-empty), sorted by name

For verbs other than GET/HEAD a missing Content-Length is signed as "0" (what the SDK does). A variant
with an empty content-length for "0" (the Storage-style rule) is also accepted, and so is a variant with
lowercased query names (older hand-written clients).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qs

from .errors import BatchError

HEADERS_TO_SIGN = (
    "content-encoding", "content-language", "content-length", "content-md5", "content-type", "date",
    "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range",
)


def _auth_error(reason: str) -> BatchError:
    return BatchError("AuthenticationFailed", None, [{"key": "AuthenticationErrorDetail", "value": reason}])


class SharedKeyVerifier:
    def __init__(self, account: str, key: str):
        self.account = account
        try:
            self.key = base64.b64decode(key.encode("utf-8"), validate=False)
        except Exception as exc:  # pragma: no cover - validated at startup
            raise ValueError("account key must be base64") from exc

    def _sign(self, s: str) -> str:
        return base64.b64encode(hmac.new(self.key, s.encode("utf-8"), hashlib.sha256).digest()).decode()

    def candidates(self, method: str, raw_path: str, raw_query: str, headers: list[tuple[str, str]],
                   account: str) -> list[str]:
        hdict: dict[str, str] = {}
        for name, value in headers:
            if value:
                hdict[name.lower()] = value
        if method not in ("GET", "HEAD") and "content-length" not in hdict:
            hdict["content-length"] = "0"
        ocp = sorted((n.lower(), v) for n, v in headers if "ocp-" in n and v)
        ocp_ci = sorted((n.lower(), v) for n, v in headers if "ocp-" in n.lower() and v)
        q = parse_qs(raw_query)
        qpart = "".join(f"\n{n}:{q[n][0]}" for n in sorted(q) if q[n][0])
        qpart_lower = "".join(f"\n{n.lower()}:{q[n][0]}" for n in sorted(q, key=str.lower) if q[n][0])
        resource = f"/{account}{raw_path}"

        def build(cl_empty_if_zero: bool, ocp_list, qp) -> str:
            vals = []
            for h in HEADERS_TO_SIGN:
                v = hdict.get(h, "")
                if h == "content-length" and cl_empty_if_zero and v == "0":
                    v = ""
                vals.append(str(v))
            s = method + "\n" + "\n".join(vals) + "\n"
            for n, v in ocp_list:
                s += f"{n}:{v}\n"
            return s + resource + qp

        out = [build(False, ocp, qpart)]
        variants = ((True, ocp, qpart), (False, ocp_ci, qpart), (False, ocp, qpart_lower), (True, ocp_ci, qpart_lower))
        for variant in variants:
            s = build(*variant)
            if s not in out:
                out.append(s)
        return out

    def verify(self, method: str, raw_path: str, raw_query: str, headers: list[tuple[str, str]]) -> None:
        auth = None
        for name, value in headers:
            if name.lower() == "authorization":
                auth = value
                break
        if not auth:
            raise _auth_error("The Authorization header is missing (the emulator requires SharedKey authentication)")
        scheme, _, cred = auth.strip().partition(" ")
        if scheme.lower() == "bearer":
            raise _auth_error("Bearer (Microsoft Entra ID) tokens are not supported by the emulator; use SharedKey")
        if scheme != "SharedKey" or ":" not in cred:
            raise _auth_error("The Authorization header is not in the 'SharedKey account:signature' format")
        account, _, signature = cred.strip().rpartition(":")
        if account != self.account:
            raise _auth_error("The account name in the Authorization header does not match the emulator account")
        for s in self.candidates(method, raw_path, raw_query, headers, account):
            if hmac.compare_digest(self._sign(s), signature):
                return
        raise _auth_error("The MAC signature found in the HTTP request is not the same as any computed signature")
