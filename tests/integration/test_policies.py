"""§5/§6 Policies and groups through the API: storing and validating policy
documents, binding them to devices directly or through groups, explaining
decisions, and the MQTT semantics every broker relies on — wildcards,
`$`-topics, subscription filters that must be covered, explicit denies
that win, and variables that can never widen what a device may touch.
Changes take effect on the very next check, with no restart and no wait."""

import re
import time

import pytest

from authd_harness import assert_error, to_epoch, uid


# ------------------------------------------------------------ helpers ----

def put_policy(admin, doc, name=None):
    name = name or uid("pol-")
    r = admin.put("/v1/policies/" + name, doc)
    assert r.status in (200, 201), "PUT /v1/policies/%s %r: %r" % (name, doc, r)
    return name


def new_device(admin, **fields):
    body = {"id": uid("pd-")}
    body.update(fields)
    r = admin.post("/v1/devices", body)
    assert r.status == 201, "POST /v1/devices %r: %r" % (body, r)
    return body["id"]


def device_with(admin, statements, **fields):
    """A fresh device whose only policy holds these statements."""
    pol = put_policy(admin, {"statements": statements})
    return new_device(admin, policies=[pol], **fields)


def allow(action, *topics):
    return {"effect": "allow", "actions": [action] if isinstance(action, str) else action,
            "topics": list(topics)}


def deny(action, *topics):
    return {"effect": "deny", "actions": [action] if isinstance(action, str) else action,
            "topics": list(topics)}


def decide(authd, device, action, topic, **extra):
    """The result ("allow"/"deny") of a /v1/check for a device named by
    its username, as a broker asks after the device connected."""
    body = {"action": action, "username": device, "client_id": device, "topic": topic}
    body.update(extra)
    r = authd.request("POST", "/v1/check", body, port=authd.check_port)
    assert r.status == 200, "POST /v1/check %r: %r" % (body, r)
    return r.json["result"]


def explain(admin, device, action, subject):
    key = "client_id" if action == "connect" else "topic"
    return admin.post("/v1/policies/explain", {"device": device, "action": action, key: subject})


def assert_decisions(authd, device, action, table):
    """table: {subject: "allow"|"deny"}; reports every mismatch at once."""
    got = {t: decide(authd, device, action, t) for t in table}
    wrong = {t: (want, got[t]) for t, want in table.items() if got[t] != want}
    assert not wrong, "%s decisions that differ from the spec {subject: (want, got)}: %r" % (
        action, wrong)


# ------------------------------------------------------ policy documents ----

EXAMPLE = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/#"]},
    {"effect": "allow", "actions": ["subscribe", "receive"], "topics": ["devices/${device.id}/cmd/+"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"], "topics": ["$SYS/#"]},
]}


def test_put_creates_with_201_replaces_with_200_and_get_returns_the_document(admin):
    name = uid("pol-")
    r = admin.put("/v1/policies/" + name, EXAMPLE)
    assert r.status == 201, "a new policy is created: %r" % r
    g = admin.get("/v1/policies/" + name)
    assert g.status == 200 and g.json == EXAMPLE, (
        "GET returns exactly the document that was put, so PUT/GET round-trip: %r" % g)

    smaller = {"statements": EXAMPLE["statements"][:2]}
    r = admin.put("/v1/policies/" + name, smaller)
    assert r.status == 200, "putting an existing name replaces it: %r" % r
    assert admin.get("/v1/policies/" + name).json == smaller, "the replacement is what is stored"


def test_policy_list_shows_name_statement_count_and_updated_at(admin):
    a, b = uid("pl-a-"), uid("pl-b-")
    put_policy(admin, EXAMPLE, a)
    put_policy(admin, {"statements": EXAMPLE["statements"][:1]}, b)
    items = {p["name"]: p for p in admin.list_all("/v1/policies")}
    assert a in items and b in items, "both policies are listed: %r" % sorted(items)
    assert items[a]["statement_count"] == 4 and items[b]["statement_count"] == 1, (
        "the list says how big each policy is: %r %r" % (items[a], items[b]))
    assert abs(to_epoch(items[a]["updated_at"]) - time.time()) < 300, items[a]
    assert "document" not in items[a] and "statements" not in items[a], (
        "a list shows names and sizes, not whole documents: %r" % items[a])


def test_delete_policy_is_204_then_404(admin):
    name = put_policy(admin, EXAMPLE)
    assert admin.delete("/v1/policies/" + name).status == 204
    assert_error(admin.get("/v1/policies/" + name), 404, "not_found")
    assert_error(admin.delete("/v1/policies/" + name), 404, "not_found")
    assert name not in [p["name"] for p in admin.list_all("/v1/policies")]


def test_policies_and_groups_are_admin_only(authd, role_key):
    for key in (None, role_key("broker"), role_key("provisioner")):
        for method, path, body in (("PUT", "/v1/policies/" + uid("p-"), EXAMPLE),
                                   ("GET", "/v1/policies", None),
                                   ("PUT", "/v1/groups/" + uid("g-"), {"policies": []}),
                                   ("POST", "/v1/policies/explain",
                                    {"device": "x", "action": "publish", "topic": "t"})):
            r = authd.request(method, path, body, token=key)
            assert_error(r, 401 if key is None else 403)


GOOD = {"effect": "allow", "actions": ["publish"], "topics": ["a/b"]}


@pytest.mark.parametrize("bad", [
    {"effect": "maybe", "actions": ["publish"], "topics": ["a"]},
    {"effect": "allow", "actions": ["fly"], "topics": ["a"]},
    {"effect": "allow", "actions": [], "topics": ["a"]},
    {"effect": "allow", "actions": ["publish"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["a/#/b"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["a+/b"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.nope}/x"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id/x"]},
    {"effect": "allow", "actions": ["publish"], "topics": [""]},
    {"effect": "allow", "actions": ["publish"], "topics": [7]},
    {"effect": "allow", "actions": ["connect"], "client_ids": ["a*b"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["a"], "colour": "red"},
    "not an object",
], ids=["effect", "action", "no-actions", "no-topics", "hash-not-last", "plus-in-level",
        "unknown-variable", "unterminated-variable", "empty-topic", "numeric-topic",
        "star-inside-client-id", "unknown-key", "string-statement"])
def test_an_invalid_statement_is_400_naming_the_statement(admin, bad):
    name = uid("bad-")
    r = admin.put("/v1/policies/" + name, {"statements": [GOOD, bad, GOOD]})
    assert_error(r, 400, "invalid_field")
    msg = r.json["error"]["message"]
    assert re.search(r"statement (1|2)\b", msg), (
        "the message must say which statement is wrong (the second): %r" % msg)
    assert_error(admin.get("/v1/policies/" + name), 404, "not_found")


@pytest.mark.parametrize("doc", [{}, {"statements": []}, {"statements": "x"},
                                 {"statements": [GOOD], "version": 2}, [GOOD]],
                         ids=["empty", "no-statements", "string", "unknown-key", "array"])
def test_an_invalid_document_is_400_and_stores_nothing(admin, doc):
    name = uid("bad-")
    r = admin.put("/v1/policies/" + name, doc)
    assert_error(r, 400, ("invalid_field", "invalid_json"))
    assert_error(admin.get("/v1/policies/" + name), 404, "not_found")


def test_a_refused_replacement_keeps_the_old_document(admin):
    name = put_policy(admin, EXAMPLE)
    r = admin.put("/v1/policies/" + name, {"statements": [{"effect": "allow"}]})
    assert_error(r, 400, "invalid_field")
    assert admin.get("/v1/policies/" + name).json == EXAMPLE, "no partial state after a 400"


@pytest.mark.parametrize("name", ["a%20b", "a%2Fb", "a*b", "x" * 129],
                         ids=["space", "slash", "star", "129"])
def test_invalid_policy_names_are_refused(admin, name):
    r = admin.put("/v1/policies/" + name, EXAMPLE)
    assert r.status in (400, 404), r
    assert_error(r, r.status)


# --------------------------------------------------------------- groups ----

def test_group_put_get_list_delete(admin):
    p1, p2 = put_policy(admin, EXAMPLE), put_policy(admin, EXAMPLE)
    name = uid("grp-")
    r = admin.put("/v1/groups/" + name, {"policies": [p1]})
    assert r.status == 201, "a new group is created: %r" % r
    g = admin.get("/v1/groups/" + name)
    assert g.status == 200 and g.json["policies"] == [p1], g
    r = admin.put("/v1/groups/" + name, {"policies": [p1, p2]})
    assert r.status == 200, "an existing group is replaced: %r" % r
    assert admin.get("/v1/groups/" + name).json["policies"] == [p1, p2], "policy order is kept"
    assert name in [x["name"] for x in admin.list_all("/v1/groups")]
    assert admin.delete("/v1/groups/" + name).status == 204
    assert_error(admin.get("/v1/groups/" + name), 404, "not_found")
    assert name not in [x["name"] for x in admin.list_all("/v1/groups")]


@pytest.mark.parametrize("body", [{"policies": "p"}, {"policies": [1]}, {"policies": ["a b"]}],
                         ids=["string", "number", "bad-name"])
def test_group_with_bad_policies_is_400(admin, body):
    name = uid("grp-")
    assert_error(admin.put("/v1/groups/" + name, body), 400, "invalid_field")
    assert_error(admin.get("/v1/groups/" + name), 404, "not_found")


# --------------------------------------------- where statements come from ----

def test_a_device_gets_its_own_policies_and_its_groups_policies(authd, admin):
    own = put_policy(admin, {"statements": [allow("publish", "own/${device.id}")]})
    g1p = put_policy(admin, {"statements": [allow("publish", "g1/${device.id}")]})
    g2p = put_policy(admin, {"statements": [allow("publish", "g2/${device.id}")]})
    g1, g2, other = uid("g1-"), uid("g2-"), uid("go-")
    other_p = put_policy(admin, {"statements": [allow("publish", "other/#")]})
    for g, p in ((g1, g1p), (g2, g2p), (other, other_p)):
        assert admin.put("/v1/groups/" + g, {"policies": [p]}).status == 201
    d = new_device(admin, policies=[own], groups=[g1, g2])
    assert_decisions(authd, d, "publish", {
        "own/" + d: "allow", "g1/" + d: "allow", "g2/" + d: "allow",
        "other/x": "deny",       # a group the device is not in gives nothing
        "own/someone-else": "deny"})


def test_a_device_naming_a_missing_policy_or_group_gets_nothing_from_it(authd, admin):
    # Names that are missing can only come from a forced delete (§14).
    pol, grp = put_policy(admin, {"statements": [allow("publish", "a/b")]}), uid("nogrp-")
    assert admin.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
    d = new_device(admin, policies=[pol], groups=[grp])
    assert decide(authd, d, "publish", "a/b") == "allow"
    assert admin.delete("/v1/groups/" + grp + "?force=true").status == 204
    assert admin.delete("/v1/policies/" + pol + "?force=true").status == 204
    assert decide(authd, d, "publish", "a/b") == "deny", "no statements means deny"


def test_patching_a_devices_policies_takes_effect_on_the_next_check(authd, admin):
    p = put_policy(admin, {"statements": [allow("publish", "p/${device.id}")]})
    q = put_policy(admin, {"statements": [allow("publish", "q/${device.id}")]})
    d = new_device(admin, policies=[p])
    assert decide(authd, d, "publish", "p/" + d) == "allow"
    assert decide(authd, d, "publish", "q/" + d) == "deny"
    assert admin.patch("/v1/devices/" + d, {"policies": [q]}).status == 200
    assert decide(authd, d, "publish", "p/" + d) == "deny", "the old grant is gone at once"
    assert decide(authd, d, "publish", "q/" + d) == "allow", "the new grant works at once"


def test_replacing_or_deleting_a_policy_takes_effect_on_the_next_check(authd, admin):
    name = put_policy(admin, {"statements": [allow("publish", "r/1")]})
    grp = uid("grp-")
    assert admin.put("/v1/groups/" + grp, {"policies": [name]}).status == 201
    direct = new_device(admin, policies=[name])
    via_group = new_device(admin, groups=[grp])
    for d in (direct, via_group):
        assert decide(authd, d, "publish", "r/1") == "allow"
    put_policy(admin, {"statements": [allow("publish", "r/2")]}, name)
    for d in (direct, via_group):
        assert decide(authd, d, "publish", "r/1") == "deny", "a replaced policy no longer grants"
        assert decide(authd, d, "publish", "r/2") == "allow", "the replacement grants at once"
    assert admin.delete("/v1/policies/" + name + "?force=true").status == 204
    for d in (direct, via_group):
        assert decide(authd, d, "publish", "r/2") == "deny", "a deleted policy grants nothing"
    put_policy(admin, {"statements": [allow("publish", "r/3")]}, name)
    assert decide(authd, direct, "publish", "r/3") == "allow", (
        "a device naming a policy that is created later picks it up")


def test_changing_group_membership_or_a_groups_policies_takes_effect_at_once(authd, admin):
    pa = put_policy(admin, {"statements": [allow("publish", "ga/x")]})
    pb = put_policy(admin, {"statements": [allow("publish", "gb/x")]})
    grp = uid("grp-")
    assert admin.put("/v1/groups/" + grp, {"policies": [pa]}).status == 201
    d = new_device(admin)
    assert decide(authd, d, "publish", "ga/x") == "deny"
    assert admin.patch("/v1/devices/" + d, {"groups": [grp]}).status == 200
    assert decide(authd, d, "publish", "ga/x") == "allow", "joining a group grants at once"
    assert admin.put("/v1/groups/" + grp, {"policies": [pb]}).status == 200
    assert decide(authd, d, "publish", "ga/x") == "deny", "the group's old policy is gone"
    assert decide(authd, d, "publish", "gb/x") == "allow", "the group's new policy applies"
    assert admin.delete("/v1/groups/" + grp + "?force=true").status == 204
    assert decide(authd, d, "publish", "gb/x") == "deny", "a deleted group grants nothing"


# --------------------------------------------------------------- explain ----

def test_explain_names_the_statement_that_allowed(admin):
    pol = put_policy(admin, EXAMPLE)
    d = new_device(admin, policies=[pol])
    r = explain(admin, d, "publish", "devices/%s/telemetry/t" % d)
    assert r.status == 200, r
    assert r.json == {"result": "allow", "reason": r.json["reason"], "device": d,
                      "action": "publish", "topic": "devices/%s/telemetry/t" % d,
                      "statement": {"policy": pol, "index": 1}}, (
        "explain echoes the question and names policy and index (0-based): %r" % r.json)


def test_explain_names_the_deny_that_won(admin):
    pol = put_policy(admin, {"statements": [allow(["publish", "subscribe"], "#"),
                                            deny("publish", "secret/#")]})
    d = new_device(admin, policies=[pol])
    r = explain(admin, d, "publish", "secret/plans")
    assert r.status == 200, r
    assert r.json["result"] == "deny" and r.json["statement"] == {"policy": pol, "index": 1}, (
        "the deny statement decided, not the allow: %r" % r.json)


def test_explain_with_no_matching_statement_has_statement_null(admin):
    d = device_with(admin, [allow("publish", "a/b")])
    r = explain(admin, d, "publish", "c/d")
    assert r.status == 200, r
    assert r.json["result"] == "deny" and r.json["statement"] is None, (
        "no statement decided: the default deny: %r" % r.json)


def test_explain_connect_uses_client_id(admin):
    pol = put_policy(admin, EXAMPLE)
    d = new_device(admin, policies=[pol])
    r = explain(admin, d, "connect", d)
    assert r.status == 200, r
    assert r.json["result"] == "allow" and r.json["client_id"] == d, r.json
    assert "topic" not in r.json, r.json
    assert r.json["statement"] == {"policy": pol, "index": 0}, r.json


def test_explain_agrees_with_check(authd, admin):
    pol = put_policy(admin, EXAMPLE)
    d = new_device(admin, policies=[pol])
    for action, topic in (("publish", "devices/%s/telemetry/a" % d), ("publish", "x"),
                          ("subscribe", "devices/%s/cmd/+" % d), ("subscribe", "devices/%s/cmd/#" % d),
                          ("receive", "devices/%s/cmd/a" % d), ("publish", "$SYS/x")):
        e = explain(admin, d, action, topic)
        assert e.status == 200, e
        assert e.json["result"] == decide(authd, d, action, topic), (
            "explain must tell what check decides (%s %s): %r" % (action, topic, e.json))


def test_explain_of_an_unknown_device_is_404(admin):
    assert_error(explain(admin, uid("ghost-"), "publish", "a"), 404, "not_found")


@pytest.mark.parametrize("body", [{}, {"device": "x", "action": "fly", "topic": "a"},
                                  {"device": "x", "action": "publish"},
                                  {"device": "x", "action": "connect", "topic": "a"},
                                  {"device": "a/b", "action": "publish", "topic": "a"}],
                         ids=["empty", "bad-action", "no-topic", "connect-without-client-id",
                              "bad-device-id"])
def test_explain_with_a_malformed_question_is_400(admin, body):
    assert_error(admin.post("/v1/policies/explain", body), 400)


# ----------------------------------------------------------- MQTT matching ----

def test_plus_matches_exactly_one_level_which_may_be_empty(authd, admin):
    d = device_with(admin, [allow("publish", "s/+/t")])
    assert_decisions(authd, d, "publish", {
        "s/a/t": "allow", "s//t": "allow",       # an empty level is a level
        "s/a/b/t": "deny", "s/t": "deny", "s/a/t/u": "deny", "s/a": "deny"})


def test_hash_matches_the_parent_and_every_level_below(authd, admin):
    d = device_with(admin, [allow("publish", "a/#")])
    assert_decisions(authd, d, "publish", {
        "a": "allow",                            # a/# matches a
        "a/b": "allow", "a/b/c/d": "allow", "a/": "allow",
        "ab": "deny", "b/a": "deny", "/a": "deny"})


def test_empty_levels_are_real_levels(authd, admin):
    d = device_with(admin, [allow("publish", "/lead", "trail/", "mid//x")])
    assert_decisions(authd, d, "publish", {
        "/lead": "allow", "lead": "deny",
        "trail/": "allow", "trail": "deny",
        "mid//x": "allow", "mid/x": "deny"})


def test_topics_are_case_sensitive_and_exact(authd, admin):
    d = device_with(admin, [allow("publish", "Room/Temp")])
    assert_decisions(authd, d, "publish", {"Room/Temp": "allow", "room/temp": "deny",
                                            "Room/Temp ": "deny", "Room/Temp/": "deny"})


def test_a_leading_wildcard_never_grants_dollar_topics(authd, admin):
    d = device_with(admin, [allow(["publish", "subscribe", "receive"], "#", "+/monitor")])
    assert_decisions(authd, d, "publish", {
        "x/y": "allow", "anything": "allow", "a/monitor": "allow",
        "$SYS/broker/uptime": "deny", "$SYS": "deny", "$monitor": "deny",
        "$SYS/monitor": "deny", "$x/monitor": "deny"})
    assert_decisions(authd, d, "subscribe", {"$SYS/#": "deny", "$SYS/+": "deny", "#": "allow"})
    assert_decisions(authd, d, "receive", {"$SYS/broker/load": "deny"})


def test_an_explicit_dollar_pattern_does_grant_dollar_topics(authd, admin):
    d = device_with(admin, [allow(["publish", "subscribe"], "$SYS/#")])
    assert_decisions(authd, d, "publish", {"$SYS/broker/uptime": "allow", "$SYS": "allow",
                                            "SYS/x": "deny"})
    assert_decisions(authd, d, "subscribe", {"$SYS/#": "allow", "$SYS/+/load": "allow"})


def test_publish_and_receive_topics_with_wildcards_are_denied(authd, admin):
    d = device_with(admin, [allow(["publish", "receive"], "#")])
    for action in ("publish", "receive"):
        assert_decisions(authd, d, action, {"a/+": "deny", "a/#": "deny", "+": "deny",
                                            "#": "deny", "a/b": "allow"})


def test_actions_are_granted_separately(authd, admin):
    d = device_with(admin, [allow("publish", "only/pub"), allow("receive", "only/recv")])
    assert decide(authd, d, "publish", "only/pub") == "allow"
    assert decide(authd, d, "receive", "only/pub") == "deny", "publish does not grant receive"
    assert decide(authd, d, "subscribe", "only/pub") == "deny"
    assert decide(authd, d, "receive", "only/recv") == "allow"
    assert decide(authd, d, "subscribe", "only/recv") == "deny", "receive does not grant subscribe"
    assert decide(authd, d, "publish", "only/recv") == "deny"


# --------------------------------------------- subscribe: filter coverage ----

def test_a_subscription_must_be_covered_by_an_allow(authd, admin):
    d = device_with(admin, [allow("subscribe", "a/+")])
    assert_decisions(authd, d, "subscribe", {
        "a/b": "allow", "a/+": "allow",
        "a/#": "deny",        # a/+ does not grant a/#: a/# also matches a/b/c
        "a": "deny", "a/+/c": "deny", "+/b": "deny", "#": "deny", "+/+": "deny"})


def test_a_hash_pattern_covers_narrower_filters(authd, admin):
    d = device_with(admin, [allow("subscribe", "a/#")])
    assert_decisions(authd, d, "subscribe", {
        "a/#": "allow", "a/+": "allow", "a/+/c": "allow", "a": "allow", "a/b/#": "allow",
        "#": "deny", "+/#": "deny", "b/#": "deny"})


def test_a_shared_subscription_is_checked_as_its_filter(authd, admin):
    d = device_with(admin, [allow("subscribe", "jobs/+")])
    assert_decisions(authd, d, "subscribe", {
        "$share/workers/jobs/+": "allow", "$share/workers/jobs/a": "allow",
        "$share/workers/jobs/#": "deny",      # the filter inside is too wide
        "$share/jobs/x": "deny",              # group "jobs", filter "x"
        "$share/workers/other/a": "deny"})


def test_a_subscription_intersecting_a_deny_is_denied(authd, admin):
    d = device_with(admin, [allow("subscribe", "a/#"), deny("subscribe", "a/secret/#")])
    assert_decisions(authd, d, "subscribe", {
        "a/public/+": "allow",
        "a/#": "deny",         # would deliver a/secret/...
        "a/+/x": "deny",       # would deliver a/secret/x
        "a/+": "deny",         # would deliver a/secret (a/secret/# matches a/secret)
        "a/secret/x": "deny", "a/public": "allow"})


# ------------------------------------------------------ explicit deny wins ----

def test_an_explicit_deny_wins_over_any_allow_in_any_order(authd, admin):
    deny_first = device_with(admin, [deny("publish", "a/secret/#"), allow("publish", "a/#")])
    deny_last = device_with(admin, [allow("publish", "a/#"), deny("publish", "a/secret/#")])
    for d in (deny_first, deny_last):
        assert_decisions(authd, d, "publish", {"a/x": "allow", "a/secret": "deny",
                                                "a/secret/k": "deny", "a/secrets": "allow"})


def test_a_deny_from_a_group_beats_an_allow_of_the_device(authd, admin):
    own = put_policy(admin, {"statements": [allow("publish", "#")]})
    guard = put_policy(admin, {"statements": [deny(["publish"], "plant/+/valves/#")]})
    grp = uid("guard-")
    assert admin.put("/v1/groups/" + grp, {"policies": [guard]}).status == 201
    d = new_device(admin, policies=[own], groups=[grp])
    assert_decisions(authd, d, "publish", {"plant/1/valves/v9": "deny", "plant/1/temp": "allow"})


# ----------------------------------------------------------------- variables ----

@pytest.mark.parametrize("shape", ["dots", "colons", "dashes", "dotdot"])
def test_device_id_substitution_grants_only_the_devices_own_subtree(authd, admin, shape):
    base = uid()
    did = {"dots": "a.b." + base, "colons": "urn:x:" + base, "dashes": "-" + base + "-",
           "dotdot": ".." + base}[shape]
    pol = put_policy(admin, {"statements": [allow("publish", "devices/${device.id}/#")]})
    assert admin.post("/v1/devices", {"id": did, "policies": [pol]}).status == 201
    other = new_device(admin, policies=[pol])
    assert_decisions(authd, did, "publish", {
        "devices/%s/t" % did: "allow", "devices/%s" % did: "allow",
        "devices/%s/t" % other: "deny", "devices/x/t": "deny", "devices": "deny",
        "devices/%sx/t" % did: "deny"})


@pytest.mark.parametrize("cid", ["+", "#", "a/b", "x/+", "+/#", ""],
                         ids=["plus", "hash", "slash", "slash-plus", "plus-hash", "empty"])
def test_a_hostile_client_id_cannot_widen_a_client_id_pattern(authd, admin, cid):
    d = device_with(admin, [allow(["publish", "subscribe"], "clients/${client_id}/#")])
    probes = {"clients/a/x": "deny", "clients/a/b/x": "deny", "clients/x/y/z": "deny"}
    for topic, want in probes.items():
        assert decide(authd, d, "publish", topic, client_id=cid) == want, (
            "client id %r must not turn into a wildcard (publish %s)" % (cid, topic))
    assert decide(authd, d, "subscribe", "clients/+/#", client_id=cid) == "deny", cid
    # The same statement works for an ordinary client id.
    assert decide(authd, d, "publish", "clients/c1/x", client_id="c1") == "allow"
    assert decide(authd, d, "publish", "clients/c2/x", client_id="c1") == "deny"


@pytest.mark.parametrize("value", ["#", "+", "a/b", "x/#"], ids=["hash", "plus", "slash", "slash-hash"])
def test_a_hostile_attribute_value_makes_its_statement_match_nothing(authd, admin, value):
    d = device_with(admin, [allow("publish", "sites/${device.attributes.site}/#")],
                    attributes={"site": value})
    assert_decisions(authd, d, "publish", {"sites/berlin/t": "deny", "sites/a/b/t": "deny",
                                            "sites/x/y": "deny", "sites/#/t": "deny"})


def test_device_attribute_substitution(authd, admin):
    stmts = [allow("publish", "sites/${device.attributes.site}/floors/${device.attributes.floor}/#")]
    d = device_with(admin, stmts, attributes={"site": "berlin", "floor": "3"})
    assert_decisions(authd, d, "publish", {"sites/berlin/floors/3/temp": "allow",
                                            "sites/paris/floors/3/temp": "deny",
                                            "sites/berlin/floors/4/temp": "deny"})
    bare = device_with(admin, stmts, attributes={"site": "berlin"})
    assert decide(authd, bare, "publish", "sites/berlin/floors/3/temp") == "deny", (
        "a statement with an unset variable matches nothing")
    # A change of attributes changes the grant on the next check.
    assert admin.patch("/v1/devices/" + d, {"attributes": {"site": "paris", "floor": "3"}}).status == 200
    assert decide(authd, d, "publish", "sites/paris/floors/3/temp") == "allow"
    assert decide(authd, d, "publish", "sites/berlin/floors/3/temp") == "deny"


def test_group_variable_expands_to_each_group_of_the_device(authd, admin):
    pol = put_policy(admin, {"statements": [allow(["publish", "subscribe"], "groups/${group}/#")]})
    g1, g2, g3 = uid("ga-"), uid("gb-"), uid("gc-")
    assert admin.put("/v1/groups/" + g1, {"policies": [pol]}).status == 201
    assert admin.put("/v1/groups/" + g2, {"policies": []}).status == 201
    d = new_device(admin, groups=[g1, g2])
    assert_decisions(authd, d, "publish", {
        "groups/%s/x" % g1: "allow",
        "groups/%s/x" % g2: "allow",  # ${group} is every group the device is in
        "groups/%s/x" % g3: "deny", "groups/x": "deny"})
    assert decide(authd, d, "subscribe", "groups/+/#") == "deny", (
        "one pattern per group: no single grant covers all groups")
    loner = new_device(admin, policies=[pol])
    assert decide(authd, loner, "publish", "groups/%s/x" % g1) == "deny", (
        "a device in no group gets nothing from ${group}")


def test_username_and_client_id_variables(authd, admin):
    d = device_with(admin, [allow("publish", "u/${username}/c/${client_id}")])
    assert decide(authd, d, "publish", "u/%s/c/cid-1" % d, client_id="cid-1") == "allow"
    assert decide(authd, d, "publish", "u/%s/c/cid-2" % d, client_id="cid-1") == "deny"


# ------------------------------------------------------------ connect globs ----

def test_client_id_patterns_are_exact_or_trailing_star_globs(admin):
    d = device_with(admin, [{"effect": "allow", "actions": ["connect"],
                              "client_ids": ["${device.id}", "${device.id}-*", "fixed"]}])
    want = {d: "allow", d + "-1": "allow", d + "-": "allow", "fixed": "allow",
            d + "x": "deny", "x" + d: "deny", "fixed2": "deny", "": "deny"}
    got = {c: explain(admin, d, "connect", c).json["result"] for c in want}
    assert got == want, "connect client id decisions (want vs got): %r vs %r" % (want, got)


def test_many_client_ids_of_one_device_each_get_their_own_substitution(authd, admin):
    # A device may connect under many client ids (one per process, say);
    # each compiles its own ${client_id}, and going back to an earlier one
    # must give the earlier answer, however many came in between.
    d = device_with(admin, [allow("publish", "c/${client_id}/#")])
    cids = ["cid-%02d" % i for i in range(20)]
    for _ in range(2):
        for cid in cids:
            assert decide(authd, d, "publish", "c/%s/x" % cid, client_id=cid) == "allow", cid
            assert decide(authd, d, "publish", "c/%s/x" % cids[0], client_id=cid) == (
                "allow" if cid == cids[0] else "deny"), cid
