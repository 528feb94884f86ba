"""The README's curl examples, in the README's order, against the real
binaries: the same methods, paths, headers and bodies, checked against the
answers the README and API.md promise."""

import requests


def test_readme_examples_in_order(stack):
    base = stack.base

    # curl -X POST localhost:8080/register -H 'Content-Type: application/json' -d '{...}'
    r = requests.post(
        f"{base}/register",
        headers={"Content-Type": "application/json"},
        data='{"Username":"user","Email":"user@example.com","Password":"password"}',
    )
    assert (r.status_code, r.json()) == (201, {"UID": 1})

    # curl -X PUT localhost:8080/login -H 'Content-Type: application/json' -d '{...}'
    r = requests.put(
        f"{base}/login",
        headers={"Content-Type": "application/json"},
        data='{"Email":"user@example.com","Password":"password"}',
    )
    assert r.status_code == 200
    login = r.json()
    assert login["UID"] == 1 and login["ExpiresAt"].endswith("Z")
    token = login["token"]
    auth = {"Authorization": token}

    # curl localhost:8080/profile -H "Authorization: $TOKEN"
    r = requests.get(f"{base}/profile", headers=auth)
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("UID", "Username", "Email")} == {
        "UID": 1,
        "Username": "user",
        "Email": "user@example.com",
    }

    # curl localhost:8080/profile/1
    r = requests.get(f"{base}/profile/1")
    assert r.status_code == 200
    assert r.json()["Username"] == "user" and "Email" not in r.json()

    # curl -X PUT localhost:8080/change-name -H "Authorization: $TOKEN" -d '{"NewName":"newname1234"}'
    r = requests.put(f"{base}/change-name", headers=auth, data='{"NewName":"newname1234"}')
    assert (r.status_code, r.json()) == (200, {"status": "name changed"})

    # curl -X POST localhost:8080/create-room -H "Authorization: $TOKEN" -d '{"Name":"GeneralChat","IsPrivate":false}'
    r = requests.post(f"{base}/create-room", headers=auth, data='{"Name":"GeneralChat","IsPrivate":false}')
    assert (r.status_code, r.json()) == (201, {"RoomID": 1})

    # A second user, so that join and invite have someone to act on.
    requests.post(f"{base}/register", data='{"Username":"user2","Email":"user2@example.com","Password":"password"}')
    token2 = requests.put(f"{base}/login", data='{"Email":"user2@example.com","Password":"password"}').json()["token"]

    # curl -X PUT localhost:8080/join -H "Authorization: $TOKEN" -d '{"RoomID":1}'
    # The creator is a member already; user2 joins.
    r = requests.put(f"{base}/join", headers=auth, data='{"RoomID":1}')
    assert (r.status_code, r.json()) == (409, {"Error": "already a member"})
    r = requests.put(f"{base}/join", headers={"Authorization": f"Bearer {token2}"}, data='{"RoomID":1}')
    assert (r.status_code, r.json()) == (200, {"status": "joined"})

    # curl -X PUT localhost:8080/invite -H "Authorization: $TOKEN" -d '{"RoomID":1,"UID":2}'
    r = requests.put(f"{base}/invite", headers=auth, data='{"RoomID":1,"UID":2}')
    assert (r.status_code, r.json()) == (409, {"Error": "already a member"})
    r = requests.post(f"{base}/create-room", headers=auth, data='{"Name":"Private","IsPrivate":true}')
    assert r.status_code == 201
    r = requests.put(f"{base}/invite", headers=auth, data='{"RoomID":2,"UID":2}')
    assert (r.status_code, r.json()) == (200, {"status": "invited"})

    # curl localhost:8080/rooms -H "Authorization: $TOKEN"
    r = requests.get(f"{base}/rooms", headers=auth)
    assert (r.status_code, r.json()) == (200, {"IDs": [1, 2]})

    # curl localhost:8080/room/1
    r = requests.get(f"{base}/room/1")
    assert r.status_code == 200
    room = r.json()
    assert {k: room[k] for k in ("RoomID", "Name", "CreatorUID", "IsPrivate")} == {
        "RoomID": 1,
        "Name": "GeneralChat",
        "CreatorUID": 1,
        "IsPrivate": False,
    }
    assert requests.get(f"{base}/room/2").status_code == 404


def test_operations_endpoints(stack):
    assert requests.get(f"{stack.base}/healthz").status_code == 200
    r = requests.get(f"{stack.base}/readyz")
    assert r.status_code == 200 and r.json()["Checks"]["postgres"] == "ok"
    doc = requests.get(f"{stack.base}/openapi.json").json()
    assert "/register" in doc["paths"] and "/room/{roomID}" in doc["paths"]


def test_oversized_and_malformed_bodies(stack):
    r = requests.post(f"{stack.base}/register", data="x" * (65 * 1024))
    assert r.status_code == 413 and "Error" in r.json()
    r = requests.post(f"{stack.base}/register", data="{not json")
    assert (r.status_code, r.json()) == (400, {"Error": "invalid json"})
