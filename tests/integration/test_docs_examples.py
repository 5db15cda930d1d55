"""docs/policies.md's examples hold: its policies, stored with the
registry the page shows, decide every row of its tables as written.

The page marks each policy document with `<!-- policy-example: NAME -->`
and the registry (groups, then devices) with
`<!-- policy-example-registry -->`; rows are
`| device | action | subject | result | reason | why |`. The names are
made unique per run (a suffix on every policy, group and device), so the
test shares the suite's daemon with the others."""

import json
import os
import re

from authd_harness import uid

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                   "docs", "policies.md")
FENCE = r"\n```json\n(.*?)```"


def page():
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def examples(text):
    policies = {name: json.loads(body) for name, body in
                re.findall(r"<!-- policy-example: ([a-z0-9-]+) -->" + FENCE, text, re.S)}
    registry = json.loads(re.search(r"<!-- policy-example-registry -->" + FENCE,
                                    text, re.S).group(1))
    section = text[text.index("## Examples"):]
    section = section[:section.index("\n## ", 1)]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if (len(cells) == 6 and cells[1] in ("connect", "publish", "subscribe", "receive")):
            rows.append(cells[:5])
    return policies, registry, rows


def test_the_page_has_examples_to_run():
    policies, registry, rows = examples(page())
    assert set(policies) == {"fleet", "firmware", "monitor"}, policies.keys()
    assert len(registry["devices"]) == 2 and len(rows) >= 20, rows
    for _, _, _, result, reason in rows:
        assert result in ("allow", "deny") and reason, rows


def test_every_documented_decision_is_what_authd_decides(admin):
    policies, registry, rows = examples(page())
    sfx = uid("-")
    ren = lambda name: name + sfx  # noqa: E731
    for name, doc in policies.items():
        r = admin.put("/v1/policies/" + ren(name), doc)
        assert r.status in (200, 201), (name, r)
    for g in registry["groups"]:
        r = admin.put("/v1/groups/" + ren(g["name"]),
                      {"policies": [ren(p) for p in g["policies"]]})
        assert r.status in (200, 201), (g, r)
    for d in registry["devices"]:
        body = dict(d, id=ren(d["id"]), policies=[ren(p) for p in d["policies"]],
                    groups=[ren(g) for g in d.get("groups", [])])
        r = admin.post("/v1/devices", body)
        assert r.status == 201, (body, r)

    wrong = []
    for device, action, subject, result, reason in rows:
        # A subject naming a documented device or group names this run's.
        subject = re.sub(r"\b(SN-0001|monitor-1|beta)\b(?!-ota)", lambda m: ren(m.group(1)),
                         subject)
        subject = subject.replace("SN-0001-ota", ren("SN-0001") + "-ota")
        key = "client_id" if action == "connect" else "topic"
        r = admin.post("/v1/policies/explain",
                       {"device": ren(device), "action": action, key: subject})
        assert r.status == 200, (device, action, subject, r)
        if (r.json["result"], r.json["reason"]) != (result, reason):
            wrong.append((device, action, subject, (result, reason),
                          (r.json["result"], r.json["reason"])))
    assert not wrong, "docs/policies.md says (want) but authd answers (got): %r" % wrong
