"""GET /v1/openapi.json (issue 13): the daemon serves an OpenAPI 3.1
document that names every route of authd/routes.c, no more and no less,
with who may call it and on which listener; the document is valid (the
structural checks below, every schema checked against JSON Schema
2020-12, and openapi_spec_validator too when it is installed); and real
answers of the daemon match the schemas it declares, so the
document cannot drift from the code without a test failing."""

import base64
import copy
import http.client
import json
import os
import re

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from authd_harness import (Device, Resp, basic, create_enrollment, csr_der_from_pem,
                           enroll, load_cert, make_csr, quote, split_pem_chain, uid)

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

try:
    import jsonschema
except ImportError:  # scripts/deps.sh test installs python3-jsonschema
    jsonschema = None

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ACCESS = {"ACCESS_PUBLIC": "public", "ACCESS_ADMIN": "admin",
          "ACCESS_PROVISIONER": "provisioner", "ACCESS_BROKER": "broker",
          "ACCESS_DEVICE": "device", "ACCESS_HANDLER": "handler"}
LISTENER = {"LISTEN_MAIN": "main", "LISTEN_ALL": "all"}


def read(rel):
    with open(os.path.join(SRC, rel), encoding="utf-8") as f:
        return f.read()


def template_key(path):
    """A path with every parameter written {}: routes.c spells them {} (one
    segment) and {*} (the rest of the path), the document {name}."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def route_rows():
    """{(METHOD, path key): (access, listener)} from the R()/RF() rows of
    authd/routes.c, read from the source as a reviewer would."""
    text = read("authd/routes.c")
    table = text[text.index("static const http_route table[]"):]
    table = table[:table.index("};")]
    table = re.sub(r"/\*.*?\*/", "", table, flags=re.S)
    rows = re.findall(r"\bRF?\(\s*\"([A-Z]+)\"\s*,\s*\"([^\"]+)\"\s*,\s*(\w+)\s*,\s*(\w+)\s*,",
                      table)
    # Every row must have been read: a row the pattern misses would be a
    # route the comparison silently ignores.
    assert len(rows) == len(re.findall(r"\bRF?\(", table)), "unparsed R() rows in routes.c"
    out = {}
    for method, path, listener, access in rows:
        key = (method, template_key(path))
        assert key not in out, "routes.c lists %s %s twice" % key
        # An access class or listener set not known here shows up as its C
        # name, which no document value matches: the comparison says so.
        out[key] = (ACCESS.get(access, access), LISTENER.get(listener, listener))
    assert len(out) > 50, out
    return out


def operations(doc):
    """{(METHOD, path key): (path, operation)} of the document."""
    out = {}
    for path, item in doc["paths"].items():
        for method, o in item.items():
            if method in METHODS:
                out[(method.upper(), template_key(path))] = (path, o)
    return out


@pytest.fixture(scope="module")
def served(authd):
    """The document as the daemon serves it: no credentials, over HTTPS."""
    r = authd.request("GET", "/v1/openapi.json", tls=True)
    assert r.status == 200, "GET /v1/openapi.json must be public: %r" % r
    assert r.headers.get("content-type", "").split(";")[0] == "application/json", r.headers
    return r


@pytest.fixture(scope="module")
def doc(served):
    assert isinstance(served.json, dict), "the document is a JSON object: %r" % served
    return served.json


# ------------------------------------------------------------- routes ----

def test_served_document_is_the_source_file(served):
    assert served.raw == read("docs/openapi.json").encode("utf-8"), (
        "the daemon must serve docs/openapi.json byte for byte (rebuild after editing it)")


def test_every_route_of_routes_c_is_documented_and_nothing_else(doc):
    routes = route_rows()
    ops = operations(doc)
    missing = sorted("%s %s" % k for k in set(routes) - set(ops))
    extra = sorted("%s %s" % k for k in set(ops) - set(routes))
    assert not missing and not extra, (
        "docs/openapi.json and authd/routes.c disagree.\n"
        "  routes served but not documented: %s\n"
        "  documented but not served: %s" % (missing or "none", extra or "none"))


def test_access_and_listener_of_each_operation_match_routes_c(doc):
    routes = route_rows()
    wrong = []
    for key, (path, o) in operations(doc).items():
        want = routes.get(key)
        got = (o.get("x-authd-access"), o.get("x-authd-listener"))
        if want is not None and got != want:
            wrong.append("%s %s: document says %s, routes.c %s" % (key[0], path, got, want))
    assert not wrong, "\n".join(wrong)


def test_public_operations_need_no_credential_and_others_declare_one(doc):
    for (method, _), (path, o) in operations(doc).items():
        sec = o.get("security", doc.get("security"))
        assert sec is not None, "%s %s declares no security" % (method, path)
        if o["x-authd-access"] == "public" and path != "/metrics":
            assert sec == [], "%s %s is public: security must be []" % (method, path)
        elif o["x-authd-access"] != "public":
            named = [n for req in sec for n in req]
            assert named, "%s %s must name the credential it takes" % (method, path)


def test_error_codes_are_those_of_common_err_h(doc):
    codes = [c for c in re.findall(r"X\(AD_\w+,\s*\"(\w+)\"", read("common/err.h")) if c != "ok"]
    enum = doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
    assert sorted(enum) == sorted(codes), (
        "ErrorDetail.code must list exactly the codes of common/err.h: missing %s, extra %s"
        % (sorted(set(codes) - set(enum)), sorted(set(enum) - set(codes))))


def test_api_md_lists_the_route(doc):
    assert "/v1/openapi.json" in doc["paths"]
    api = read("docs/api.md")
    table = api[api.index("## 5. Route table"):api.index("## 6.")]
    assert "`/v1/openapi.json`" in table, "docs/api.md §5 must list GET /v1/openapi.json"


# --------------------------------------------------------- validation ----

def resolve(doc, node):
    """Follows a local $ref (#/a/b) to what it names; other values as they are."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node and len(node) <= 2:
        ref = node["$ref"]
        assert ref.startswith("#/"), "only local references are used: %s" % ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        seen += 1
        assert seen < 20, "reference loop at %s" % ref
    return node


def pointer_ok(doc, ref):
    if not ref.startswith("#/"):
        return False
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def walk(node, where="#"):
    """Yields (json pointer, dict) for every object of the document."""
    if isinstance(node, dict):
        yield where, node
        for k, v in node.items():
            yield from walk(v, where + "/" + str(k).replace("~", "~0").replace("/", "~1"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, "%s/%d" % (where, i))


def schemas_of(doc):
    """(where, schema) for every schema: those of components and every
    inline one (parameters, bodies, responses, headers)."""
    for name, s in doc.get("components", {}).get("schemas", {}).items():
        yield "#/components/schemas/" + name, s
    for where, node in walk(doc):
        if "/components/schemas/" in where:
            continue
        if isinstance(node.get("schema"), dict):
            yield where + "/schema", node["schema"]


def structural_problems(doc):
    """What is wrong with doc as an OpenAPI 3.1 document, as a list of
    sentences (empty when nothing is)."""
    bad = []
    if not str(doc.get("openapi", "")).startswith("3.1"):
        bad.append("openapi must be 3.1.x, is %r" % doc.get("openapi"))
    info = doc.get("info") or {}
    for k in ("title", "version"):
        if not isinstance(info.get(k), str) or not info.get(k):
            bad.append("info.%s is required" % k)
    op_ids = {}
    schemes = doc.get("components", {}).get("securitySchemes", {})
    for path, item in (doc.get("paths") or {}).items():
        if not path.startswith("/"):
            bad.append("path %r must start with /" % path)
        names = re.findall(r"\{([^}]*)\}", path)
        if len(set(names)) != len(names):
            bad.append("%s repeats a parameter" % path)
        for method, o in item.items():
            if method not in METHODS:
                continue
            label = "%s %s" % (method.upper(), path)
            if not o.get("operationId"):
                bad.append(label + ": no operationId")
            elif o["operationId"] in op_ids:
                bad.append(label + ": operationId %s also used by %s"
                           % (o["operationId"], op_ids[o["operationId"]]))
            else:
                op_ids[o["operationId"]] = label
            if not o.get("summary"):
                bad.append(label + ": no summary")
            if not o.get("tags"):
                bad.append(label + ": no tags")
            if not o.get("responses"):
                bad.append(label + ": no responses")
            for code in o.get("responses", {}):
                if not re.fullmatch(r"[1-5](\d\d|XX)|default", code):
                    bad.append(label + ": bad response code %r" % code)
                if not resolve(doc, o["responses"][code]).get("description"):
                    bad.append(label + ": response %s has no description" % code)
            params = [resolve(doc, p) for p in item.get("parameters", []) + o.get("parameters", [])]
            in_path = [p.get("name") for p in params if p.get("in") == "path"]
            for n in names:
                if n not in in_path:
                    bad.append(label + ": {%s} has no `in: path` parameter" % n)
            for p in params:
                if p.get("in") == "path":
                    if p.get("name") not in names:
                        bad.append(label + ": path parameter %s is not in the template" % p.get("name"))
                    if p.get("required") is not True:
                        bad.append(label + ": path parameter %s must be required" % p.get("name"))
                if p.get("in") not in ("path", "query", "header", "cookie"):
                    bad.append(label + ": parameter %s has in=%r" % (p.get("name"), p.get("in")))
            for req in o.get("security", []):
                for n in req:
                    if n not in schemes:
                        bad.append(label + ": unknown security scheme %s" % n)
    for where, node in walk(doc):
        ref = node.get("$ref")
        if isinstance(ref, str) and not pointer_ok(doc, ref):
            bad.append("%s: $ref %s resolves to nothing" % (where, ref))
    for name, s in schemes.items():
        if s.get("type") not in ("apiKey", "http", "mutualTLS", "oauth2", "openIdConnect"):
            bad.append("security scheme %s has type %r" % (name, s.get("type")))
    if jsonschema is not None:
        for where, s in schemas_of(doc):
            try:
                jsonschema.Draft202012Validator.check_schema(s)
            except jsonschema.exceptions.SchemaError as e:
                bad.append("%s is not a JSON Schema 2020-12: %s" % (where, e.message))
    return bad


def test_document_is_valid_openapi_3_1(doc):
    # openapi_spec_validator, when installed, checks the document against
    # the OpenAPI 3.1 schema itself; the structural checks run either way.
    try:
        import openapi_spec_validator as osv
    except ImportError:
        osv = None
    if osv is not None:
        check = getattr(osv, "validate", None) or osv.validate_spec
        check(copy.deepcopy(doc))
    problems = structural_problems(doc)
    assert not problems, "docs/openapi.json:\n  " + "\n  ".join(problems)


def test_structural_check_finds_what_it_claims_to():
    """The checker is not vacuous: each kind of mistake it looks for in a
    copy of the document is reported."""
    base = json.loads(read("docs/openapi.json"))
    assert structural_problems(base) == []

    d = copy.deepcopy(base)
    d["paths"]["/v1/devices/{id}"]["get"]["parameters"] = []
    assert any("{id} has no `in: path`" in p for p in structural_problems(d))

    d = copy.deepcopy(base)
    d["paths"]["/v1/check"]["post"]["operationId"] = "getDevice"
    assert any("also used by" in p for p in structural_problems(d))

    d = copy.deepcopy(base)
    d["paths"]["/healthz"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"] = {"$ref": "#/components/schemas/NoSuchThing"}
    assert any("NoSuchThing" in p for p in structural_problems(d))

    d = copy.deepcopy(base)
    del d["paths"]["/v1/ca"]["get"]["responses"]
    assert any("/v1/ca: no responses" in p for p in structural_problems(d))

    d = copy.deepcopy(base)
    d["openapi"] = "3.0.3"
    assert structural_problems(d)

    if jsonschema is not None:
        d = copy.deepcopy(base)
        d["components"]["schemas"]["Device"]["properties"]["id"] = {"type": "text"}
        assert any("components/schemas/Device" in p for p in structural_problems(d))


# ------------------------------------------ the daemon's real answers ----

# (METHOD, path template) of every operation a real answer was checked
# for, and the answer tests that ran to their end: the last test asks
# that every operation of the document was exercised.
EXERCISED = set()
FINISHED = set()
ANSWER_TESTS = ("registry", "check_token_compat", "ca_est_revocation", "public_errors",
                "token_key")


def response_schema(doc, method, path, status, ctype="application/json"):
    """The schema the document gives for this answer; fails when the
    document does not list the status or the media type."""
    o = doc["paths"][path][method.lower()]
    responses = o["responses"]
    assert str(status) in responses, (
        "%s %s answered %d, which the document does not list (it has %s)"
        % (method, path, status, sorted(responses)))
    content = resolve(doc, responses[str(status)]).get("content") or {}
    # Media types are compared without their parameters (the daemon's
    # "; charset=utf-8", the document's "; smime-type=certs-only").
    by_type = {k.split(";")[0].strip().lower(): v for k, v in content.items()}
    assert ctype.lower() in by_type, "%s %s %d: the document has no %s body (%s)" % (
        method, path, status, ctype, sorted(content))
    return by_type[ctype.lower()]["schema"]


def assert_matches(doc, method, path, r):
    """r (a Resp) is an answer the document allows for METHOD path: its
    status is listed, its media type too, and a JSON body validates
    against the declared schema."""
    EXERCISED.add((method, template_key(path)))
    o = doc["paths"][path][method.lower()]
    if r.status == 204:
        assert "204" in o["responses"], "%s %s: 204 undocumented" % (method, path)
        assert not r.raw, "a 204 has no body"
        return
    ctype = r.headers.get("content-type", "").split(";")[0].strip()
    schema = response_schema(doc, method, path, r.status, ctype)
    if ctype != "application/json":
        return
    assert jsonschema is not None, "python3-jsonschema is needed (scripts/deps.sh test)"
    # The schema travels with the components it refers to, so "#/components/..."
    # resolves inside it whatever resolver API this jsonschema has.
    wrapped = {"$schema": "https://json-schema.org/draft/2020-12/schema",
               "components": doc["components"], "allOf": [schema]}
    errors = sorted(jsonschema.Draft202012Validator(wrapped).iter_errors(r.json),
                    key=lambda e: list(e.absolute_path))
    assert not errors, "%s %s %d does not match the document:\n  %s\nbody: %s" % (
        method, path, r.status,
        "\n  ".join("%s: %s" % ("/".join(map(str, e.absolute_path)) or "(body)", e.message)
                    for e in errors[:10]),
        r.text[:1500])


def stream_head(daemon, path, token):
    """Status and headers of a streamed answer (GET /v1/events), without
    waiting for a body that never ends."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=20)
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer " + token})
        r = conn.getresponse()
        return Resp(r.status, r.getheaders(), b"")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def world(authd, admin, tmp_path_factory):
    """A policy, a group, an enrollment and an enrolled device, made through
    the API, for the answers below."""
    pol, grp = uid("oa-pol-"), uid("oa-grp-")
    put_pol = admin.put("/v1/policies/" + pol, {"statements": [
        {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
        {"effect": "allow", "actions": ["publish", "subscribe"], "topics": ["dev/${device.id}/#"]},
        {"effect": "deny", "actions": ["publish"], "topics": ["dev/${device.id}/secret"]}]})
    assert put_pol.status == 201, put_pol
    put_grp = admin.put("/v1/groups/" + grp, {"policies": [pol]})
    assert put_grp.status == 201, put_grp
    enr = create_enrollment(admin, groups=[grp])
    devdir = str(tmp_path_factory.mktemp("oa"))
    dev, r = enroll(authd, enr["token"], uid("oa-dev-"), devdir)
    assert r.status == 201, r
    return {"policy": pol, "group": grp, "enrollment": enr, "device": dev, "enroll": r,
            "put_policy": put_pol, "put_group": put_grp, "dir": devdir}


def test_registry_answers_match_the_document(doc, authd, admin, world):
    dev, enr = world["device"], world["enrollment"]
    assert_matches(doc, "POST", "/v1/enroll", world["enroll"])
    assert_matches(doc, "GET", "/v1/devices/{id}", admin.get("/v1/devices/" + dev.id))
    assert_matches(doc, "GET", "/v1/devices", admin.get("/v1/devices?limit=3"))
    r = admin.post("/v1/devices", {"id": uid("oa-new-"), "attributes": {"site": "x"}})
    assert_matches(doc, "POST", "/v1/devices", r)
    child = r.json["id"]
    r = admin.patch("/v1/devices/" + child, {"gateway": dev.id, "status": "suspended"})
    assert_matches(doc, "PATCH", "/v1/devices/{id}", r)
    assert_matches(doc, "GET", "/v1/devices/{id}/children",
                   admin.get("/v1/devices/%s/children" % dev.id))
    assert_matches(doc, "DELETE", "/v1/devices/{id}", admin.delete("/v1/devices/" + child))
    assert_matches(doc, "GET", "/v1/enrollments/{id}", admin.get("/v1/enrollments/" + enr["id"]))
    assert_matches(doc, "GET", "/v1/enrollments", admin.get("/v1/enrollments?limit=3"))
    r = admin.post("/v1/enrollments", {"name": uid("oa-e-")})
    assert_matches(doc, "POST", "/v1/enrollments", r)
    assert_matches(doc, "PATCH", "/v1/enrollments/{id}",
                   admin.patch("/v1/enrollments/" + r.json["id"], {"max_uses": 5}))
    assert_matches(doc, "DELETE", "/v1/enrollments/{id}",
                   admin.delete("/v1/enrollments/" + r.json["id"]))
    assert_matches(doc, "GET", "/v1/certs/{serial}", admin.get("/v1/certs/" + dev.serial))
    assert_matches(doc, "GET", "/v1/certs", admin.get("/v1/certs?device=" + dev.id))
    assert_matches(doc, "PUT", "/v1/policies/{name}", world["put_policy"])
    assert_matches(doc, "GET", "/v1/policies", admin.get("/v1/policies?limit=5"))
    assert_matches(doc, "GET", "/v1/policies/{name}", admin.get("/v1/policies/" + world["policy"]))
    spare = uid("oa-spare-")
    stmt = {"statements": [{"effect": "allow", "actions": ["receive"], "topics": ["x/#"]}]}
    assert admin.put("/v1/policies/" + spare, stmt).status == 201
    r = admin.put("/v1/policies/" + spare, stmt)
    assert r.status == 200, "putting it again replaces it: %r" % r
    assert_matches(doc, "PUT", "/v1/policies/{name}", r)
    assert_matches(doc, "PUT", "/v1/groups/{name}", world["put_group"])
    r = admin.put("/v1/groups/" + spare, {"policies": [spare]})
    r = admin.put("/v1/groups/" + spare, {})
    assert r.status == 200, r
    assert_matches(doc, "PUT", "/v1/groups/{name}", r)
    assert_matches(doc, "GET", "/v1/groups/{name}", admin.get("/v1/groups/" + world["group"]))
    assert_matches(doc, "GET", "/v1/groups", admin.get("/v1/groups?limit=5"))
    assert_matches(doc, "DELETE", "/v1/groups/{name}", admin.delete("/v1/groups/" + spare))
    assert_matches(doc, "DELETE", "/v1/policies/{name}", admin.delete("/v1/policies/" + spare))
    r = admin.post("/v1/apikeys", {"name": uid("oa-k-"), "role": "broker"})
    assert_matches(doc, "POST", "/v1/apikeys", r)
    assert_matches(doc, "GET", "/v1/apikeys", admin.get("/v1/apikeys"))
    assert_matches(doc, "DELETE", "/v1/apikeys/{id}", admin.delete("/v1/apikeys/" + r.json["id"]))
    assert_matches(doc, "GET", "/v1/audit", admin.get("/v1/audit?limit=30&order=desc"))
    assert_matches(doc, "GET", "/v1/audit/verify", admin.get("/v1/audit/verify"))
    assert_matches(doc, "POST", "/v1/policies/explain", admin.post("/v1/policies/explain", {
        "device": dev.id, "action": "publish", "topic": "dev/%s/t" % dev.id}))
    assert_matches(doc, "POST", "/v1/devices:import", admin.post(
        "/v1/devices:import", '{"id":"%s"}\n{"id":"%s"}\nnot json\n' % (uid("oa-i-"), dev.id),
        headers={"Content-Type": "application/x-ndjson"}))
    FINISHED.add("registry")


def test_check_token_and_compat_answers_match_the_document(doc, authd, admin, world):
    dev = world["device"]
    r = admin.post("/v1/check", {"action": "connect", "client_id": dev.id, "username": dev.id,
                                 "cert_serial": dev.serial})
    assert r.json.get("result") == "allow" and r.json.get("statements"), (
        "an allowed connect, with its statements, is the richest answer: %r" % r)
    assert_matches(doc, "POST", "/v1/check", r)
    r = admin.post("/v1/check", {"action": "publish", "username": dev.id,
                                 "topic": "dev/%s/secret" % dev.id})
    assert r.json.get("reason") == "explicit_deny", r
    assert_matches(doc, "POST", "/v1/check", r)
    assert_matches(doc, "POST", "/v1/check/batch", admin.post("/v1/check/batch", {"checks": [
        {"action": "subscribe", "username": dev.id, "topic": "dev/%s/#" % dev.id},
        {"action": 7}]}))

    tok = authd.request("POST", "/v1/token", "grant_type=client_credentials", tls=True,
                        client_cert=dev.client_cert,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_matches(doc, "POST", "/v1/token", tok)
    assert_matches(doc, "POST", "/v1/introspect",
                   admin.post("/v1/introspect", {"token": tok.json["access_token"]}))
    assert_matches(doc, "POST", "/v1/introspect", admin.post("/v1/introspect", {"token": "x"}))
    assert_matches(doc, "GET", "/v1/jwks", authd.request("GET", "/v1/jwks"))
    assert_matches(doc, "GET", "/.well-known/jwks.json",
                   authd.request("GET", "/.well-known/jwks.json"))
    assert_matches(doc, "GET", "/v1/gateway/bundle",
                   authd.request("GET", "/v1/gateway/bundle", tls=True, client_cert=dev.client_cert))
    assert_matches(doc, "POST", "/v1/tokens/revoke",
                   admin.post("/v1/tokens/revoke", {"jti": uid("oa-jti-")}))
    r = admin.post("/v1/devices/%s/secret" % dev.id)
    assert_matches(doc, "POST", "/v1/devices/{id}/secret", r)
    secret = r.json["secret"]
    assert_matches(doc, "GET", "/v1/events", stream_head(authd, "/v1/events", admin.token))

    def both(path, fields, want_status=None):
        """The compat path by POST (JSON) and by GET (query string)."""
        r = admin.post(path, fields)
        if want_status:
            assert r.status == want_status, r
        assert_matches(doc, "POST", path, r)
        q = "&".join("%s=%s" % (k, quote(str(v))) for k, v in fields.items())
        g = admin.get(path + "?" + q)
        assert (g.status, g.json) == (r.status, r.json), "GET answers as POST: %r %r" % (g, r)
        assert_matches(doc, "GET", path, g)

    both("/compat/mosquitto-go-auth/user",
         {"username": dev.id, "password": secret, "clientid": dev.id}, 200)
    both("/compat/mosquitto-go-auth/superuser", {"username": dev.id}, 403)
    both("/compat/mosquitto-go-auth/acl",
         {"username": dev.id, "clientid": dev.id, "topic": "dev/%s/a" % dev.id, "acc": 2}, 200)
    both("/compat/mosquitto-go-auth/acl",
         {"username": dev.id, "clientid": dev.id, "topic": "elsewhere", "acc": 2}, 403)
    r = admin.post("/compat/emqx/authn", {"username": dev.id, "password": secret,
                                          "clientid": dev.id})
    assert r.json.get("result") == "allow" and "acl" in r.json, r
    both("/compat/emqx/authn", {"username": dev.id, "password": secret, "clientid": dev.id})
    both("/compat/emqx/authn", {"username": dev.id, "password": "wrong", "clientid": dev.id})
    both("/compat/emqx/authz", {"username": dev.id, "clientid": dev.id, "action": "publish",
                                "topic": "dev/%s/a" % dev.id})
    assert_matches(doc, "POST", "/compat/vernemq/{hook}", admin.post(
        "/compat/vernemq/auth_on_subscribe",
        {"username": dev.id, "topics": [{"topic": "dev/%s/a" % dev.id, "qos": 1},
                                        {"topic": "z", "qos": 0}]}))
    assert_matches(doc, "POST", "/compat/vernemq/{hook}", admin.post(
        "/compat/vernemq/auth_on_register",
        {"username": dev.id, "client_id": dev.id, "password": "wrong"}))
    assert_matches(doc, "POST", "/compat/vernemq", admin.post(
        "/compat/vernemq", {"username": dev.id, "topic": "dev/%s/a" % dev.id},
        headers={"vernemq-hook": "auth_on_publish"}))
    FINISHED.add("check_token_compat")


def test_ca_est_and_revocation_answers_match_the_document(doc, authd, admin, world,
                                                          make_enrollment):
    dev = world["device"]
    r = authd.request("POST", "/v1/renew", {"csr": dev.new_csr()}, tls=True,
                      client_cert=dev.client_cert)
    assert r.status == 201, r
    assert_matches(doc, "POST", "/v1/renew", r)
    r = admin.post("/v1/server-certs", {"csr": make_csr("oa.example")[1],
                                        "dns": ["oa.example"], "ips": ["127.0.0.1"]})
    assert r.status == 201, r
    assert_matches(doc, "POST", "/v1/server-certs", r)

    enr = make_enrollment()
    newdev = Device(world["dir"], uid("oa-est-"))
    body = base64.b64encode(csr_der_from_pem(newdev.csr_pem))
    r = authd.request("POST", "/.well-known/est/simpleenroll", body, tls=True,
                      headers=dict(basic(enr["id"], enr["token"]),
                                   **{"Content-Type": "application/pkcs10"}))
    assert r.status == 200, r
    assert_matches(doc, "POST", "/.well-known/est/simpleenroll", r)
    body = base64.b64encode(csr_der_from_pem(dev.new_csr()))
    r = authd.request("POST", "/.well-known/est/simplereenroll", body, tls=True,
                      client_cert=dev.client_cert, headers={"Content-Type": "application/pkcs10"})
    assert r.status == 200, r
    assert_matches(doc, "POST", "/.well-known/est/simplereenroll", r)

    issuer = split_pem_chain(authd.ca_pem())[0]
    req = ocsp.OCSPRequestBuilder().add_certificate(
        load_cert(dev.cert_pem), issuer, hashes.SHA1()).build().public_bytes(
        serialization.Encoding.DER)
    r = authd.request("POST", "/v1/ocsp", req, headers={"Content-Type": "application/ocsp-request"})
    assert r.status == 200, r
    assert_matches(doc, "POST", "/v1/ocsp", r)
    r = authd.request("GET", "/v1/ocsp/" + quote(base64.b64encode(req).decode()))
    assert r.status == 200, r
    assert_matches(doc, "GET", "/v1/ocsp/{request}", r)

    r = admin.post("/v1/certs/%s/revoke" % dev.serial, {"reason": "superseded"})
    assert r.status == 200, r
    assert_matches(doc, "POST", "/v1/certs/{serial}/revoke", r)
    r = admin.post("/v1/certs/%s/revoke" % dev.serial, {})
    assert r.status == 409, "revoking twice is a conflict: %r" % r
    assert_matches(doc, "POST", "/v1/certs/{serial}/revoke", r)
    victim = admin.post("/v1/devices", {"id": uid("oa-rv-")}).json["id"]
    assert_matches(doc, "POST", "/v1/devices/{id}/revoke",
                   admin.post("/v1/devices/%s/revoke" % victim, {"reason": "keyCompromise"}))
    FINISHED.add("ca_est_revocation")


def test_public_and_error_answers_match_the_document(doc, authd, admin, world, served):
    assert_matches(doc, "GET", "/v1/openapi.json", served)
    for path in ("/healthz", "/readyz", "/v1/ca", "/v1/ca.pem", "/v1/crl", "/v1/crl.pem",
                 "/.well-known/est/cacerts", "/.well-known/est/csrattrs", "/metrics"):
        r = authd.request("GET", path)
        assert r.status in (200, 204), r
        assert_matches(doc, "GET", path, r)
    r = admin.get("/v1/devices/" + uid("oa-none-"))
    assert r.status == 404
    assert_matches(doc, "GET", "/v1/devices/{id}", r)
    r = authd.request("GET", "/v1/devices")
    assert r.status == 401
    assert_matches(doc, "GET", "/v1/devices", r)
    r = admin.post("/v1/devices", {"id": world["device"].id})
    assert r.status == 409
    assert_matches(doc, "POST", "/v1/devices", r)
    r = admin.post("/v1/devices", {"id": uid("oa-"), "grups": []})
    assert r.status == 400
    assert_matches(doc, "POST", "/v1/devices", r)
    r = admin.delete("/v1/groups/" + world["group"])
    assert r.status == 409
    assert_matches(doc, "DELETE", "/v1/groups/{name}", r)
    r = admin.post("/v1/check", {"action": "fly"})
    assert r.status in (200, 400), r
    assert_matches(doc, "POST", "/v1/check", r)
    r = admin.get("/v1/certs?status=bogus")
    assert r.status == 400
    assert_matches(doc, "GET", "/v1/certs", r)
    FINISHED.add("public_errors")


def test_token_key_rotation_answer_matches_the_document(doc, spawn_authd):
    """On a daemon of its own: a rotated key stays in the JWKS forever,
    which the shared daemon's other tests should not have to expect."""
    d = spawn_authd()
    r = d.api(d.admin_key).post("/v1/token-keys")
    assert r.status == 201, r
    assert_matches(doc, "POST", "/v1/token-keys", r)
    FINISHED.add("token_key")


def test_every_operation_was_checked_against_a_real_answer(doc):
    if set(ANSWER_TESTS) - FINISHED:
        pytest.skip("needs the answer tests above to have run: %s"
                    % sorted(set(ANSWER_TESTS) - FINISHED))
    left = sorted("%s %s" % k for k in set(operations(doc)) - EXERCISED)
    assert not left, "operations no real answer was checked for: %s" % left


def test_an_answer_off_the_document_is_caught(doc):
    """assert_matches itself can fail: a device without its id, an error
    body with an unknown code and an undocumented status are refused."""
    bad = Resp(200, [("Content-Type", "application/json")],
               b'{"status":"active","groups":[],"policies":[],"attributes":{}}')
    with pytest.raises(AssertionError, match="does not match"):
        assert_matches(doc, "GET", "/v1/devices/{id}", bad)
    bad = Resp(404, [("Content-Type", "application/json")],
               b'{"error":{"code":"no_such_code","message":"x"}}')
    with pytest.raises(AssertionError, match="does not match"):
        assert_matches(doc, "GET", "/v1/devices/{id}", bad)
    bad = Resp(418, [("Content-Type", "application/json")], b'{}')
    with pytest.raises(AssertionError, match="does not list"):
        assert_matches(doc, "GET", "/v1/devices/{id}", bad)
    bad = Resp(200, [("Content-Type", "text/html")], b'<p>')
    with pytest.raises(AssertionError, match="no text/html body"):
        assert_matches(doc, "GET", "/v1/devices/{id}", bad)
