"""Access: API keys and Supabase JWTs on every rerank route and /info, open health, /metrics by setting, one
401 for every failure, the production start-up rules, and the official cohere SDK with a key."""

from __future__ import annotations

import base64
import json
import logging
import time

import cohere
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import SettingsError, load_settings
from tests.service.conftest import live_server, wait_ready

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the HS512 case

KEYS = ("key-one-5c0f7e2a9b", "key-two-81d4b6e0c3")
HS_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
AUDIENCE = "authenticated"
BODY = {"query": "when do cats sleep", "documents": ["Cats sleep all day.", "Stocks fell."]}
ROUTES = [("post", "/v1/rerank", BODY), ("post", "/v2/rerank", BODY),
          ("post", "/rerank", {"query": BODY["query"], "texts": BODY["documents"]}), ("get", "/info", None)]

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(private) -> str:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def public_jwk(private, kid: str) -> dict:
    algorithm = jwt.algorithms.ECAlgorithm if isinstance(private, ec.EllipticCurvePrivateKey) \
        else jwt.algorithms.RSAAlgorithm
    jwk = json.loads(algorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "ES256" if algorithm is jwt.algorithms.ECAlgorithm else "RS256"}


JWKS = json.dumps({"keys": [public_jwk(EC_KEY, "ec-1"), public_jwk(RSA_KEY, "rsa-1")]})


def claims(**overrides) -> dict:
    now = int(time.time())
    return {"sub": "user-123", "role": "authenticated", "aud": AUDIENCE, "iat": now, "exp": now + 600,
            **overrides}


def b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def secured(bert_model_dir):
    """Keys, the HS256 secret and a JWKS (EC + RSA) all configured, in production."""
    settings = load_settings(RERANK_MODEL_PATH=str(bert_model_dir), ENVIRONMENT="production",
                             RERANK_API_KEYS=",".join(KEYS), SUPABASE_JWT_SECRET=HS_SECRET,
                             SUPABASE_JWT_PUBLIC_KEY=JWKS)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def call(client: TestClient, method: str, path: str, body, token: str | None = None, scheme: str = "Bearer"):
    headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
    return client.request(method.upper(), path, json=body, headers=headers)


def assert_unauthorized(response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["error_type"] == "unauthorized"
    assert body["message"] == body["error"] == "missing or invalid credentials: send Authorization: Bearer " \
                                               "<API key or JWT>"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_rerank_route_and_info_need_a_credential(secured, method, path, body):
    assert_unauthorized(call(secured, method, path, body))
    for key in KEYS:
        assert call(secured, method, path, body, key).status_code == 200


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic " + KEYS[0], "Token " + KEYS[0],
                                    "Bearer " + KEYS[0][:-1], "Bearer " + KEYS[0] + "x",
                                    "Bearer " + KEYS[0].upper(), "Bearer " + ",".join(KEYS)])
def test_every_bad_credential_gets_the_same_answer(secured, header):
    response = secured.post("/v1/rerank", json=BODY, headers={"Authorization": header} if header else {})
    assert_unauthorized(response)


def test_the_scheme_is_case_insensitive(secured):
    assert secured.post("/v1/rerank", json=BODY, headers={"Authorization": f"bearer {KEYS[1]}"}).status_code == 200


def test_authentication_comes_before_the_body_is_read(secured):
    # no credential: no validation feedback either (malformed JSON, wrong content type, bad fields)
    assert_unauthorized(secured.post("/v1/rerank", content=b"{not json", headers={"Content-Type": "application/json"}))
    assert_unauthorized(secured.post("/v2/rerank", content=b"query=x", headers={"Content-Type": "text/plain"}))
    assert_unauthorized(secured.post("/rerank", json={"query": ""}))
    malformed = secured.post("/v1/rerank", content=b"{not json",
                             headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEYS[0]}"})
    assert malformed.status_code == 400


def test_health_stays_open_and_metrics_need_a_key(secured):
    assert secured.get("/api/health/").status_code == 200
    assert secured.get("/api/health").status_code == 200
    assert_unauthorized(secured.get("/metrics"))
    response = secured.get("/metrics", headers={"Authorization": f"Bearer {KEYS[0]}"})
    assert response.status_code == 200 and "reranker_requests_total" in response.text


def test_metrics_public_opens_only_metrics(make_client, bert_model_dir):
    client = make_client(RERANK_MODEL_PATH=str(bert_model_dir), RERANK_API_KEYS=KEYS[0],
                         RERANK_METRICS_PUBLIC="true")
    assert client.get("/metrics").status_code == 200
    assert_unauthorized(client.get("/info"))
    assert_unauthorized(client.post("/v1/rerank", json=BODY))


def test_the_openapi_document_declares_the_bearer_scheme(secured):
    spec = secured.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in ("/v1/rerank", "/v2/rerank", "/rerank"):
        assert spec["paths"][path]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/api/health/"]["get"]


# ---- Supabase JWTs ----------------------------------------------------------------------------------------


def test_valid_jwts_are_accepted(secured):
    tokens = [jwt.encode(claims(), HS_SECRET, algorithm="HS256"),
              jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"}),
              jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"}),
              jwt.encode(claims(), EC_KEY, algorithm="ES256")]  # no kid: every key of that type is tried
    for token in tokens:
        for method, path, body in ROUTES:
            assert call(secured, method, path, body, token).status_code == 200, (token, path)


def bad_tokens() -> dict[str, str]:
    good = jwt.encode(claims(), HS_SECRET, algorithm="HS256")
    header, payload, signature = good.split(".")
    tampered_payload = b64(claims(sub="admin", role="service_role"))
    return {
        "expired": jwt.encode(claims(exp=int(time.time()) - 3600), HS_SECRET, algorithm="HS256"),
        "not yet valid": jwt.encode(claims(nbf=int(time.time()) + 3600), HS_SECRET, algorithm="HS256"),
        "wrong audience": jwt.encode(claims(aud="anon"), HS_SECRET, algorithm="HS256"),
        "no audience (the anon and service-role keys)": jwt.encode(
            {k: v for k, v in claims(role="service_role").items() if k != "aud"}, HS_SECRET, algorithm="HS256"),
        "no expiry": jwt.encode({k: v for k, v in claims().items() if k != "exp"}, HS_SECRET, algorithm="HS256"),
        "wrong secret": jwt.encode(claims(), HS_SECRET + "x", algorithm="HS256"),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.",
        "alg none with a signature": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.{signature}",
        "HS256 signed with the EC public key": _hs256_with(public_pem(EC_KEY)),
        "HS256 signed with the RSA public key": _hs256_with(public_pem(RSA_KEY)),
        "HS256 signed with the JWKS text": _hs256_with(JWKS),
        "tampered payload": f"{header}.{tampered_payload}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}",
        "ES256 from another key": jwt.encode(claims(), OTHER_EC_KEY, algorithm="ES256", headers={"kid": "ec-1"}),
        "ES256 claiming the RSA kid": jwt.encode(claims(), OTHER_EC_KEY, algorithm="ES256",
                                                 headers={"kid": "rsa-1"}),
        "RS256 with the EC kid, signed by another key": jwt.encode(
            claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
            headers={"kid": "ec-1"}),
        "HS512 with the secret": jwt.encode(claims(), HS_SECRET, algorithm="HS512"),
        "garbage": "a.b.c",
        "two parts": f"{header}.{payload}",
    }


def _hs256_with(secret: str) -> str:
    # PyJWT refuses to sign HMAC with a PEM/JWK-looking key; an attacker would not: sign by hand.
    import hashlib
    import hmac

    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims())}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


@pytest.mark.parametrize("name", list(bad_tokens()))
def test_bad_jwts_are_refused(secured, name):
    token = bad_tokens()[name]
    for method, path, body in ROUTES:
        assert_unauthorized(call(secured, method, path, body, token))


def test_pem_public_keys_verify_their_own_algorithm_only(make_client, bert_model_dir):
    client = make_client(RERANK_MODEL_PATH=str(bert_model_dir), SUPABASE_JWT_PUBLIC_KEY=public_pem(EC_KEY))
    assert call(client, "post", "/v1/rerank", BODY, jwt.encode(claims(), EC_KEY, algorithm="ES256")).status_code \
        == 200
    assert_unauthorized(call(client, "post", "/v1/rerank", BODY, _hs256_with(public_pem(EC_KEY))))
    assert_unauthorized(call(client, "post", "/v1/rerank", BODY, jwt.encode(claims(), HS_SECRET, algorithm="HS256")))
    assert_unauthorized(call(client, "post", "/v1/rerank", BODY, KEYS[0]))


def test_a_custom_audience(make_client, bert_model_dir):
    client = make_client(RERANK_MODEL_PATH=str(bert_model_dir), SUPABASE_JWT_SECRET=HS_SECRET,
                         RERANK_JWT_AUDIENCE="reranker")
    assert call(client, "get", "/info", None, jwt.encode(claims(aud="reranker"), HS_SECRET)).status_code == 200
    assert call(client, "get", "/info", None, jwt.encode(claims(aud=["x", "reranker"]), HS_SECRET)).status_code \
        == 200
    assert_unauthorized(call(client, "get", "/info", None, jwt.encode(claims(), HS_SECRET)))


# ---- start-up rules ---------------------------------------------------------------------------------------


def test_production_refuses_to_start_without_authentication():
    with pytest.raises(SettingsError) as excinfo:
        load_settings(ENVIRONMENT="production")
    message = str(excinfo.value)
    assert "RERANK_API_KEYS" in message and "RERANK_ALLOW_ANONYMOUS" in message
    assert load_settings(ENVIRONMENT="production", RERANK_ALLOW_ANONYMOUS="true").rerank_allow_anonymous
    for variable, value in (("RERANK_API_KEYS", "k"), ("SUPABASE_JWT_SECRET", HS_SECRET),
                            ("SUPABASE_JWT_PUBLIC_KEY", public_pem(RSA_KEY))):
        assert load_settings(ENVIRONMENT="production", **{variable: value}).auth_configured
    with pytest.raises(SettingsError, match="RERANK_API_KEYS"):
        load_settings(ENVIRONMENT="production", RERANK_API_KEYS=" , ")


def test_production_refuses_cors_star():
    with pytest.raises(SettingsError, match=r"CORS_ALLOWED_ORIGINS=\* is refused in production"):
        load_settings(ENVIRONMENT="production", RERANK_API_KEYS="k", CORS_ALLOWED_ORIGINS="https://a.example,*")
    assert load_settings(CORS_ALLOWED_ORIGINS="*").cors_allowed_origins == ["*"]  # development: allowed


@pytest.mark.parametrize("value", ["not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
                                   '{"kty": "oct", "k": "c2VjcmV0"}', '{"keys": []}',
                                   json.dumps({**public_jwk(EC_KEY, "x"), "d": "AAAA"}),
                                   public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
                                   public_pem(ec.generate_private_key(ec.SECP384R1()))])
def test_unusable_public_keys_are_refused_at_start_naming_the_variable_not_the_value(value):
    with pytest.raises(SettingsError) as excinfo:
        load_settings(SUPABASE_JWT_PUBLIC_KEY=value)
    assert "SUPABASE_JWT_PUBLIC_KEY" in str(excinfo.value)
    assert value not in str(excinfo.value)


def test_secrets_are_never_shown(bert_model_dir, caplog):
    caplog.set_level(logging.DEBUG)
    settings = load_settings(RERANK_MODEL_PATH=str(bert_model_dir), RERANK_API_KEYS=",".join(KEYS),
                             SUPABASE_JWT_SECRET=HS_SECRET)
    assert not any(secret in repr(settings) or secret in str(settings.model_dump())
                   for secret in (*KEYS, HS_SECRET))
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        client.post("/v1/rerank", json=BODY, headers={"Authorization": f"Bearer {KEYS[0]}"})
        client.post("/v1/rerank", json=BODY, headers={"Authorization": f"Bearer {KEYS[0]}-wrong"})
        info = client.get("/info", headers={"Authorization": f"Bearer {KEYS[1]}"}).text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "2 API key(s)" in logged
    for secret in (*KEYS, HS_SECRET):
        assert secret not in logged and secret not in info


# ---- the official cohere SDK, over real HTTP ---------------------------------------------------------------


@pytest.fixture(scope="module")
def secured_url(bert_model_dir):
    settings = load_settings(RERANK_MODEL_PATH=str(bert_model_dir), RERANK_PRECISION="fp32",
                             RERANK_API_KEYS=",".join(KEYS), SUPABASE_JWT_SECRET=HS_SECRET)
    with live_server(settings) as url:
        yield url


def test_cohere_sdk_with_an_api_key(secured_url):
    documents = ["Cats sleep most of the day.", "Stocks fell on Monday.", "A kitten naps in the sun."]
    client = cohere.ClientV2(api_key=KEYS[1], base_url=secured_url)
    response = client.rerank(model="rerank-v3.5", query="when do cats sleep", documents=documents, top_n=2)
    assert len(response.results) == 2
    v1 = cohere.Client(api_key=KEYS[0], base_url=secured_url).rerank(query="cats", documents=documents)
    assert sorted(r.index for r in v1.results) == [0, 1, 2]


def test_cohere_sdk_with_a_supabase_jwt(secured_url):
    token = jwt.encode(claims(), HS_SECRET, algorithm="HS256")
    response = cohere.ClientV2(api_key=token, base_url=secured_url).rerank(
        model="m", query="cats", documents=["a", "b"])
    assert len(response.results) == 2


@pytest.mark.parametrize("api_key", ["wrong-key", jwt.encode(claims(aud="anon"), HS_SECRET, algorithm="HS256")])
def test_cohere_sdk_with_a_bad_credential_gets_401(secured_url, api_key):
    client = cohere.ClientV2(api_key=api_key, base_url=secured_url)
    with pytest.raises(cohere.errors.UnauthorizedError) as excinfo:
        client.rerank(model="m", query="cats", documents=["a", "b"])
    assert excinfo.value.status_code == 401
    assert excinfo.value.headers["www-authenticate"] == "Bearer"
    assert excinfo.value.body["message"].startswith("missing or invalid credentials")
