"""Who may call the service: API keys (RERANK_API_KEYS) and Supabase JWTs (SUPABASE_JWT_SECRET for HS256,
SUPABASE_JWT_PUBLIC_KEY for ES256/RS256, PEM or JWK/JWKS). No HTTP here: `Authenticator.verify(token)` says
whether a bearer token is good, and never why not (callers answer every failure alike).

Algorithms are pinned per key, never read from the token: the HS256 secret only verifies HS256, an EC key
only ES256, an RSA key only RS256. So `alg: none` and "HS256 signed with the public key" are refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

logger = logging.getLogger("service.credentials")

# Clock skew tolerated on exp/nbf/iat (seconds), as Supabase's own client libraries do.
JWT_LEEWAY_S = 10
_REQUIRED_CLAIMS = ["exp", "aud"]


class CredentialConfigError(ValueError):
    """A key setting that cannot be used; the message names the variable, never its value."""


@dataclass(frozen=True)
class Principal:
    kind: str  # "api_key" | "jwt"
    subject: str | None = None  # the JWT's `sub`; API keys stay anonymous (never logged)


class ApiKeys:
    """Constant-time membership: every configured key is compared (as SHA-256 digests, so the length of a
    key does not leak either), whichever matches."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._digests = tuple(hashlib.sha256(key.encode()).digest() for key in keys)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def matches(self, candidate: str) -> bool:
        digest = hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).digest()
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(digest, known)
        return found


@dataclass(frozen=True)
class _VerificationKey:
    key: object
    algorithm: str
    kid: str | None = None


def load_public_keys(text: str) -> list[_VerificationKey]:
    """SUPABASE_JWT_PUBLIC_KEY: a PEM public key, a JWK, or a JWKS ({"keys": [...]}, what Supabase serves at
    /auth/v1/.well-known/jwks.json). EC P-256 -> ES256, RSA -> RS256; anything else is refused."""
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise CredentialConfigError("SUPABASE_JWT_PUBLIC_KEY looks like JSON but does not parse as a JWK")
        jwks = data.get("keys") if isinstance(data, dict) and "keys" in data else [data]
        if not isinstance(jwks, list) or not jwks:
            raise CredentialConfigError("SUPABASE_JWT_PUBLIC_KEY: a JWKS needs a non-empty `keys` list")
        return [_from_jwk(item) for item in jwks]
    if "-----BEGIN" in text:
        try:
            key = load_pem_public_key(text.replace("\\n", "\n").encode())
        except (ValueError, TypeError):
            raise CredentialConfigError("SUPABASE_JWT_PUBLIC_KEY is not a valid PEM public key "
                                        "(-----BEGIN PUBLIC KEY----- ...)") from None
        return [_VerificationKey(key, _algorithm_for(key))]
    raise CredentialConfigError("SUPABASE_JWT_PUBLIC_KEY must be a PEM public key or a JWK / JWKS (JSON); "
                                "for the HS256 secret use SUPABASE_JWT_SECRET")


def _from_jwk(item: object) -> _VerificationKey:
    if not isinstance(item, dict) or item.get("kty") not in {"EC", "RSA"}:
        raise CredentialConfigError("SUPABASE_JWT_PUBLIC_KEY: only EC (ES256) and RSA (RS256) public JWKs are "
                                    "accepted; an HS256 secret goes in SUPABASE_JWT_SECRET")
    if "d" in item:
        raise CredentialConfigError("SUPABASE_JWT_PUBLIC_KEY holds a PRIVATE key (the JWK has `d`): give the "
                                    "public key only")
    try:
        key = jwt.PyJWK(item).key
    except jwt.PyJWKError:
        raise CredentialConfigError("SUPABASE_JWT_PUBLIC_KEY: the JWK does not load as an EC/RSA public key") \
            from None
    algorithm = _algorithm_for(key)
    if item.get("alg") not in (None, algorithm):
        raise CredentialConfigError(f"SUPABASE_JWT_PUBLIC_KEY: the JWK says alg {item.get('alg')!r} but its key "
                                    f"type signs {algorithm}")
    return _VerificationKey(key, algorithm, item.get("kid"))


def _algorithm_for(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise CredentialConfigError("SUPABASE_JWT_PUBLIC_KEY: EC keys must be P-256 (ES256)")
        return "ES256"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CredentialConfigError("SUPABASE_JWT_PUBLIC_KEY: RSA keys must have at least 2048 bits")
        return "RS256"
    raise CredentialConfigError("SUPABASE_JWT_PUBLIC_KEY: only EC P-256 (ES256) and RSA (RS256) keys are "
                                "accepted")


class JwtVerifier:
    def __init__(self, *, secret: str | None, public_key: str | None, audience: str) -> None:
        self.audience = audience
        self._secret = secret.encode() if secret else None
        self._public = load_public_keys(public_key) if public_key else []

    def __bool__(self) -> bool:
        return bool(self._secret) or bool(self._public)

    def _candidates(self, header: dict) -> list[tuple[object, str]]:
        algorithm = header.get("alg")
        if algorithm == "HS256" and self._secret:
            return [(self._secret, "HS256")]
        keys = [k for k in self._public if k.algorithm == algorithm]
        kid = header.get("kid")
        if kid is not None and any(k.kid == kid for k in keys):
            keys = [k for k in keys if k.kid == kid]
        return [(k.key, k.algorithm) for k in keys]

    def verify(self, token: str) -> Principal | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        for key, algorithm in self._candidates(header):
            try:
                claims = jwt.decode(token, key, algorithms=[algorithm], audience=self.audience,
                                    leeway=JWT_LEEWAY_S, options={"require": _REQUIRED_CLAIMS})
            except (jwt.PyJWTError, ValueError, TypeError):
                continue
            subject = claims.get("sub")
            return Principal("jwt", subject if isinstance(subject, str) else None)
        return None


class Authenticator:
    """Every way in that the settings configure. `enabled` is False only when none is configured (then every
    route is open: allowed in development, and in production only with RERANK_ALLOW_ANONYMOUS=true)."""

    def __init__(self, api_keys: ApiKeys, jwts: JwtVerifier | None) -> None:
        self.api_keys = api_keys
        self.jwts = jwts

    @classmethod
    def from_settings(cls, settings) -> Authenticator:
        def reveal(secret) -> str | None:
            return secret.get_secret_value() if secret is not None else None

        jwts = JwtVerifier(secret=reveal(settings.supabase_jwt_secret),
                           public_key=reveal(settings.supabase_jwt_public_key),
                           audience=settings.rerank_jwt_audience)
        return cls(ApiKeys(settings.api_keys), jwts if jwts else None)

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys) or self.jwts is not None

    def describe(self) -> str:
        ways = []
        if self.api_keys:
            ways.append(f"{len(self.api_keys)} API key(s)")
        if self.jwts is not None:
            ways.append(f"Supabase JWTs (audience {self.jwts.audience!r})")
        return " and ".join(ways) if ways else "none"

    def verify(self, token: str) -> Principal | None:
        if self.api_keys.matches(token):
            return Principal("api_key")
        if self.jwts is not None and token.count(".") == 2:
            return self.jwts.verify(token)
        return None
