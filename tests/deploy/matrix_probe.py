#!/usr/bin/env python3
"""A person on Matrix for scripts/test-deploy: the client-server API over plain HTTP
(standard library only), in an unencrypted room.

  matrix_probe.py register HS SHARED_SECRET USER PASSWORD
      registers USER through Synapse's shared-secret admin API
  matrix_probe.py room STATE HS USER PASSWORD BOT_ID
      logs USER in, creates a room, invites BOT_ID, waits (60 s) until it has joined;
      keeps the login and the room in the JSON file STATE
  matrix_probe.py send STATE BODY [ROOT]
      sends BODY to the room (in the thread of ROOT, if given); prints the event id
  matrix_probe.py wait STATE ROOT BOT_ID SECONDS LINE...
      waits until the thread of ROOT, as BOT_ID posted it (each message after its last
      edit), has every LINE as a line of its own; exits 1 with the thread otherwise
  matrix_probe.py devices HS USER PASSWORD
      the devices of USER other than the one this login makes, one a line (the login is
      removed again)
"""

import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def call(hs, method, path, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(hs.rstrip("/") + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        sys.exit(f"matrix_probe: {method} {path}: {e.code} {e.read().decode(errors='replace')}")


def login(hs, user, password):
    return call(hs, "POST", "/_matrix/client/v3/login", body={
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        "initial_device_display_name": "test-deploy probe",
    })


def q(s):
    return urllib.parse.quote(s, safe="")


def events(st):
    """The room's timeline, oldest first (enough for a test's few messages)."""
    path = f"/_matrix/client/v3/rooms/{q(st['room'])}/messages?dir=b&limit=1000"
    chunk = call(st["hs"], "GET", path, st["token"])["chunk"]
    return list(reversed(chunk))


def thread_text(st, root, bot):
    msgs, order = {}, []
    evs = [e for e in events(st) if e.get("type") == "m.room.message" and e.get("sender") == bot]
    for e in evs:
        rel = e["content"].get("m.relates_to", {})
        if rel.get("rel_type") == "m.thread" and rel.get("event_id") == root:
            msgs[e["event_id"]] = e["content"].get("body", "")
            order.append(e["event_id"])
    for e in evs:
        rel = e["content"].get("m.relates_to", {})
        if rel.get("rel_type") == "m.replace" and rel.get("event_id") in msgs:
            msgs[rel["event_id"]] = e["content"].get("m.new_content", {}).get("body", "")
    return "\n".join(msgs[i] for i in order)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd = argv[1]
    if cmd == "register":
        hs, secret, user, password = argv[2:6]
        nonce = call(hs, "GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), user.encode(), password.encode(), b"notadmin"]))
        made = call(hs, "POST", "/_synapse/admin/v1/register", body={
            "nonce": nonce, "username": user, "password": password,
            "admin": False, "mac": mac.hexdigest(),
        })
        # Registration logs the new user in on a device of its own: log it out, so the
        # user's devices are only the ones its client makes.
        if made.get("access_token"):
            call(hs, "POST", "/_matrix/client/v3/logout", made["access_token"], {})
    elif cmd == "room":
        state_file, hs, user, password, bot = argv[2:7]
        st = {"hs": hs, "token": login(hs, user, password)["access_token"]}
        st["room"] = call(hs, "POST", "/_matrix/client/v3/createRoom", st["token"], {
            "preset": "private_chat", "invite": [bot], "name": "test-deploy",
        })["room_id"]
        deadline = time.time() + 60
        while True:
            members = call(hs, "GET", f"/_matrix/client/v3/rooms/{q(st['room'])}/joined_members", st["token"])
            if bot in members.get("joined", {}):
                break
            if time.time() > deadline:
                sys.exit(f"matrix_probe: {bot} did not join {st['room']} within 60 s")
            time.sleep(0.5)
        with open(state_file, "w") as f:
            json.dump(st, f)
        print(st["room"])
    elif cmd == "send":
        st = json.load(open(argv[2]))
        txn = f"probe{time.time_ns()}"
        path = f"/_matrix/client/v3/rooms/{q(st['room'])}/send/m.room.message/{txn}"
        content = {"msgtype": "m.text", "body": argv[3]}
        if len(argv) > 4:
            content["m.relates_to"] = {
                "rel_type": "m.thread", "event_id": argv[4], "is_falling_back": True,
                "m.in_reply_to": {"event_id": argv[4]},
            }
        print(call(st["hs"], "PUT", path, st["token"], content)["event_id"])
    elif cmd == "wait":
        st = json.load(open(argv[2]))
        root, bot, seconds, want = argv[3], argv[4], float(argv[5]), argv[6:]
        deadline = time.time() + seconds
        while True:
            text = thread_text(st, root, bot)
            lines = set(text.splitlines())
            if all(w in lines for w in want):
                print(text)
                return
            if time.time() > deadline:
                missing = [w for w in want if w not in lines]
                sys.exit(f"matrix_probe: the thread lacks {missing} after {seconds:.0f} s; it reads:\n{text}")
            time.sleep(0.5)
    elif cmd == "devices":
        hs, user, password = argv[2:5]
        me = login(hs, user, password)
        try:
            for d in call(hs, "GET", "/_matrix/client/v3/devices", me["access_token"])["devices"]:
                if d["device_id"] != me["device_id"]:
                    print(d["device_id"])
        finally:
            call(hs, "POST", "/_matrix/client/v3/logout", me["access_token"], {})
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
